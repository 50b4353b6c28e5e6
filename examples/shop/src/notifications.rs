//! notification-service: posts an in-app notice for every `UserRegistered`
//! in its own group (each group gets every event), behind the inbox (a
//! redelivery posts nothing twice), into its own `notifications` table.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use eventbus::{inbox, BoxError, Context, Handle, Handler};
use serde::{Deserialize, Serialize};

use crate::db::{sql, Database, Ddl};
use crate::email::ByUser;
use crate::events::UserRegistered;
use crate::http::ApiResult;
use crate::with_db;

const DDL: Ddl = Ddl {
    sqlite: &["CREATE TABLE IF NOT EXISTS notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL,
        text TEXT NOT NULL)"],
    postgres: &["CREATE TABLE IF NOT EXISTS notifications (
        id BIGSERIAL PRIMARY KEY,
        user_id BIGINT NOT NULL,
        text TEXT NOT NULL)"],
    mysql: &["CREATE TABLE IF NOT EXISTS notifications (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        user_id BIGINT NOT NULL,
        text TEXT NOT NULL,
        INDEX notifications_user (user_id))"],
};

/// A notice the service posted.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Notification {
    pub user_id: i64,
    pub text: String,
}

/// Posts the "new user" notice.
#[derive(Debug, Handler)]
#[handler(
    group = "notification-service",
    events(UserRegistered),
    inbox,
    backoff_ms = 200
)]
pub struct NotifyNewUser {
    db: Database,
}

impl Handle<UserRegistered> for NotifyNewUser {
    async fn handle(&self, e: UserRegistered, _cx: &Context) -> Result<(), BoxError> {
        with_db!(&self.db, |_pool, _outbox, _inbox, DB| {
            let mut tx = inbox::transaction::<DB>().await?;
            eventbus::sqlx::query(&sql::<DB>(
                "INSERT INTO notifications (user_id, text) VALUES ($1, $2)",
            ))
            .bind(e.user_id)
            .bind(format!("{} <{}> joined", e.name, e.email))
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }
}

/// The service: its database (notifications, inbox).
#[derive(Debug)]
pub struct NotificationService {
    db: Database,
}

impl NotificationService {
    /// Creates the service's tables.
    pub async fn new(db: Database) -> Result<Arc<Self>, BoxError> {
        db.migrate(&DDL).await?;
        Ok(Arc::new(Self { db }))
    }

    /// The handler to register on the service's bus.
    pub fn handler(&self) -> NotifyNewUser {
        NotifyNewUser {
            db: self.db.clone(),
        }
    }

    /// `GET /notifications?user_id=N`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/notifications", get(list))
            .with_state(Arc::clone(self))
    }

    /// Notices about `user_id`.
    pub async fn about(&self, user_id: i64) -> ApiResult<Vec<Notification>> {
        with_db!(&self.db, |pool, _outbox, _inbox, DB| {
            let rows: Vec<(i64, String)> = eventbus::sqlx::query_as(&sql::<DB>(
                "SELECT user_id, text FROM notifications WHERE user_id = $1 ORDER BY id",
            ))
            .bind(user_id)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(user_id, text)| Notification { user_id, text })
                .collect())
        })
    }
}

async fn list(
    State(svc): State<Arc<NotificationService>>,
    q: Result<Query<ByUser>, QueryRejection>,
) -> ApiResult<Json<Vec<Notification>>> {
    let Query(q) = q.map_err(|r| crate::http::ApiError::bad_request(r.body_text()))?;
    Ok(Json(svc.about(q.user_id).await?))
}
