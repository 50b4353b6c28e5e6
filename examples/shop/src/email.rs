//! email-service: sends the welcome mail for every `UserRegistered` (its own
//! group, behind the inbox: a redelivered event sends no second mail). The
//! "sent" mails are rows of its own `emails_sent` table, written in the
//! inbox transaction — a stand-in for an SMTP call.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use eventbus::{inbox, BoxError, Context, Handle, Handler};
use serde::{Deserialize, Serialize};

use crate::db::{sql, Database, Ddl};
use crate::events::UserRegistered;
use crate::http::ApiResult;
use crate::with_db;

const DDL: Ddl = Ddl {
    sqlite: &["CREATE TABLE IF NOT EXISTS emails_sent (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL,
        to_address TEXT NOT NULL,
        subject TEXT NOT NULL,
        message_id TEXT NOT NULL)"],
    postgres: &["CREATE TABLE IF NOT EXISTS emails_sent (
        id BIGSERIAL PRIMARY KEY,
        user_id BIGINT NOT NULL,
        to_address TEXT NOT NULL,
        subject TEXT NOT NULL,
        message_id TEXT NOT NULL)"],
    mysql: &["CREATE TABLE IF NOT EXISTS emails_sent (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        user_id BIGINT NOT NULL,
        to_address VARCHAR(254) NOT NULL,
        subject TEXT NOT NULL,
        message_id VARCHAR(36) NOT NULL,
        INDEX emails_sent_user (user_id))"],
};

/// A mail the service sent.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct SentMail {
    pub user_id: i64,
    pub to: String,
    pub subject: String,
}

/// Sends the welcome mail.
#[derive(Debug, Handler)]
#[handler(
    group = "email-service",
    events(UserRegistered),
    inbox,
    concurrency = 2,
    backoff_ms = 200
)]
pub struct SendWelcomeMail {
    db: Database,
}

impl Handle<UserRegistered> for SendWelcomeMail {
    async fn handle(&self, e: UserRegistered, cx: &Context) -> Result<(), BoxError> {
        with_db!(&self.db, |_pool, _outbox, _inbox, DB| {
            let mut tx = inbox::transaction::<DB>().await?;
            eventbus::sqlx::query(&sql::<DB>(
                "INSERT INTO emails_sent (user_id, to_address, subject, message_id) VALUES ($1, $2, $3, $4)",
            ))
            .bind(e.user_id)
            .bind(&e.email)
            .bind(format!("Welcome, {}!", e.name))
            .bind(cx.message_id().to_string())
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }
}

/// The service: its database (mails sent, inbox).
#[derive(Debug)]
pub struct EmailService {
    db: Database,
}

impl EmailService {
    /// Creates the service's tables.
    pub async fn new(db: Database) -> Result<Arc<Self>, BoxError> {
        db.migrate(&DDL).await?;
        Ok(Arc::new(Self { db }))
    }

    /// The handler to register on the service's bus.
    pub fn handler(&self) -> SendWelcomeMail {
        SendWelcomeMail {
            db: self.db.clone(),
        }
    }

    /// `GET /emails?user_id=N`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/emails", get(list))
            .with_state(Arc::clone(self))
    }

    /// Mails sent to `user_id`.
    pub async fn sent_to(&self, user_id: i64) -> ApiResult<Vec<SentMail>> {
        with_db!(&self.db, |pool, _outbox, _inbox, DB| {
            let rows: Vec<(i64, String, String)> = eventbus::sqlx::query_as(&sql::<DB>(
                "SELECT user_id, to_address, subject FROM emails_sent WHERE user_id = $1 ORDER BY id",
            ))
            .bind(user_id)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(user_id, to, subject)| SentMail {
                    user_id,
                    to,
                    subject,
                })
                .collect())
        })
    }
}

/// `?user_id=N`.
#[derive(Debug, Deserialize)]
pub struct ByUser {
    pub user_id: i64,
}

async fn list(
    State(svc): State<Arc<EmailService>>,
    q: Result<Query<ByUser>, QueryRejection>,
) -> ApiResult<Json<Vec<SentMail>>> {
    let Query(q) = q.map_err(|r| crate::http::ApiError::bad_request(r.body_text()))?;
    Ok(Json(svc.sent_to(q.user_id).await?))
}
