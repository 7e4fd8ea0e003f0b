//! Local user accounts.

use sqlx::FromRow;

use crate::{Backend, Db, Result, conflict_aware};

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: String,
    /// Lower-cased at the edge; unique.
    pub email: String,
    /// argon2id PHC string; `None` for accounts that sign in only through an upstream provider.
    pub password_hash: Option<String>,
    pub is_admin: i64,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

impl UserRow {
    pub fn is_admin(&self) -> bool {
        self.is_admin != 0
    }
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }
}

macro_rules! user_columns {
    () => {
        "id, email, password_hash, is_admin, created_at, disabled_at"
    };
}

async fn insert_user_with<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    user: &UserRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, is_admin, created_at, disabled_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(&user.password_hash)
    .bind(user.is_admin)
    .bind(user.created_at)
    .bind(user.disabled_at)
    .execute(executor)
    .await
    .map_err(conflict_aware)?;
    Ok(())
}

impl Db {
    /// Insert a user. `StoreError::Conflict` when the email is taken.
    pub async fn insert_user(&self, user: &UserRow) -> Result<()> {
        insert_user_with(&self.pool, user).await
    }

    /// Insert the first user only if there is none yet: the setup page's guarantee that a
    /// leaked setup link cannot add a second admin. Returns whether it was inserted.
    pub async fn insert_first_user(&self, user: &UserRow) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // Under READ COMMITTED two setups can both count zero and both insert. This lock
            // mode conflicts with itself and with INSERT, so setups run one at a time and the
            // second counts the first's committed row. (SQLite's BEGIN IMMEDIATE already
            // serialises writers.)
            sqlx::query("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        if count > 0 {
            return Ok(false);
        }
        insert_user_with(&mut *tx, user).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn count_users(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    pub async fn find_user_by_email(&self, email: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn find_user(&self, id: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn list_users(&self) -> Result<Vec<UserRow>> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY created_at, email"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Disable an account. Its sessions end and every grant it holds is revoked, in one
    /// transaction. Returns false when no such user exists.
    pub async fn disable_user(&self, id: &str, now: i64, revocation_ttl: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let updated =
            sqlx::query("UPDATE users SET disabled_at = $2 WHERE id = $1 AND disabled_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let grants: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM grants WHERE user_id = $1 AND revoked_at IS NULL")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        for (grant_id,) in grants {
            crate::tokens::revoke_grant_in(
                &mut tx,
                &grant_id,
                now,
                "user_disabled",
                revocation_ttl,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// `user_id` was seen from `country` at `now_ms`. When the pair is new and the user was
    /// seen from other countries before, those countries (oldest first); otherwise `None`
    /// (a known country, or the very first one, which is no change). Concurrent callers
    /// (instances seeing the same pair at once) agree: one insert wins, one gets the answer.
    pub async fn note_user_country(
        &self,
        user_id: &str,
        country: &str,
        now_ms: i64,
    ) -> Result<Option<Vec<String>>> {
        let inserted = sqlx::query(
            "INSERT INTO user_countries (user_id, country, first_seen_ms, last_seen_ms) \
             VALUES ($1, $2, $3, $3) ON CONFLICT (user_id, country) DO NOTHING",
        )
        .bind(user_id)
        .bind(country)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            sqlx::query(
                "UPDATE user_countries SET last_seen_ms = $3 \
                 WHERE user_id = $1 AND country = $2 AND last_seen_ms < $3",
            )
            .bind(user_id)
            .bind(country)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
            return Ok(None);
        }
        let others: Vec<(String,)> = sqlx::query_as(
            "SELECT country FROM user_countries WHERE user_id = $1 AND country <> $2 \
             ORDER BY first_seen_ms, country",
        )
        .bind(user_id)
        .bind(country)
        .fetch_all(&self.pool)
        .await?;
        Ok((!others.is_empty()).then(|| others.into_iter().map(|(c,)| c).collect()))
    }

    pub async fn set_password_hash(&self, id: &str, hash: &str) -> Result<bool> {
        let n = sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(id)
            .bind(hash)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }
}
