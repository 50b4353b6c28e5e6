//! user-service: owns the `users` table. `POST /users` writes the user and
//! `UserRegistered` in one transaction and answers at once — the welcome
//! mail and the notification happen later, elsewhere (asynchronous work).

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::db::{sql, Database, Ddl};
use crate::events::UserRegistered;
use crate::http::{ApiError, ApiResult};
use crate::with_db;

const DDL: Ddl = Ddl {
    sqlite: &["CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        email TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL)"],
    postgres: &["CREATE TABLE IF NOT EXISTS users (
        id BIGSERIAL PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL)"],
    mysql: &["CREATE TABLE IF NOT EXISTS users (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        email VARCHAR(254) NOT NULL UNIQUE,
        name VARCHAR(100) NOT NULL)"],
};

/// A registration request.
#[derive(Debug, Deserialize)]
pub struct NewUser {
    pub email: String,
    pub name: String,
}

/// A stored user.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
}

/// The service: its database (users, outbox).
#[derive(Debug)]
pub struct UserService {
    db: Database,
}

impl UserService {
    /// Creates the service's tables.
    pub async fn new(db: Database) -> Result<Arc<Self>, eventbus::BoxError> {
        db.migrate(&DDL).await?;
        Ok(Arc::new(Self { db }))
    }

    /// `POST /users`, `GET /users/{id}`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/users", post(register))
            .route("/users/{id}", get(find))
            .with_state(Arc::clone(self))
    }

    /// Registers a user: the row and its event commit together.
    pub async fn register(&self, new: NewUser) -> ApiResult<User> {
        let email = new.email.trim().to_lowercase();
        let name = new.name.trim().to_owned();
        validate(&email, &name)?;
        with_db!(&self.db, |pool, outbox, _inbox, DB| {
            let mut tx = pool.begin().await?;
            let inserted: Result<i64, _> = eventbus::sqlx::query_scalar(&sql::<DB>(
                "INSERT INTO users (email, name) VALUES ($1, $2) RETURNING id",
            ))
            .bind(&email)
            .bind(&name)
            .fetch_one(&mut *tx)
            .await;
            let id = match inserted {
                Ok(id) => id,
                Err(eventbus::sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        format!("e-mail {email} is already registered"),
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            let event = UserRegistered {
                user_id: id,
                email: email.clone(),
                name: name.clone(),
            };
            outbox.add(&mut tx, &event).await?;
            tx.commit().await?;
            Ok(User { id, email, name })
        })
    }

    /// The user with `id`, if any.
    pub async fn find(&self, id: i64) -> ApiResult<Option<User>> {
        with_db!(&self.db, |pool, _outbox, _inbox, DB| {
            let row: Option<(i64, String, String)> = eventbus::sqlx::query_as(&sql::<DB>(
                "SELECT id, email, name FROM users WHERE id = $1",
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|(id, email, name)| User { id, email, name }))
        })
    }
}

fn validate(email: &str, name: &str) -> ApiResult<()> {
    let well_formed = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.contains(char::is_whitespace);
    if !well_formed {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("not an e-mail address: {email:?}"),
        ));
    }
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name must be 1 to 100 characters",
        ));
    }
    Ok(())
}

async fn register(
    State(svc): State<Arc<UserService>>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let Json(new) = body?;
    Ok((StatusCode::CREATED, Json(svc.register(new).await?)))
}

async fn find(
    State(svc): State<Arc<UserService>>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<User>> {
    let Path(id) = id?;
    svc.find(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no user {id}")))
}
