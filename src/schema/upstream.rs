//! `openmls_sqlite_storage`'s schema on a new file, in one commit.
//!
//! That crate's runner (refinery) applies each of its migrations in a
//! transaction of its own and records it in the next. A power cut between
//! the two leaves a migration applied and not recorded, and every later open
//! tries it again and fails ("table ... already exists"): the file never
//! opens. On a file without that crate's history table, the migrations run
//! instead on a private in-memory database, and what they made (every
//! table, index, view and trigger, and the rows, the history's among them)
//! is copied into the file inside the transaction that also applies this
//! crate's migrations. The first open of a new file is then one commit.
//!
//! A file that has the history (an upgrade of `openmls_sqlite_storage`
//! adding migrations) still migrates through the runner, as that crate
//! does; its migrations cannot be applied any other way without repeating
//! their SQL here.

use openmls_sqlite_storage::SqliteStorageProvider;
use rusqlite::{params_from_iter, types::Value, Connection};

use crate::{
    catalog::table_exists,
    codec::PoolCodec,
    error::{Error, Result},
};

/// The history table `openmls_sqlite_storage` names for its runner.
const HISTORY_TABLE: &str = "openmls_sqlite_storage_migrations";

/// Whether `conn` has no trace of `openmls_sqlite_storage`'s migrations.
pub(super) fn is_new(conn: &Connection) -> Result<bool> {
    Ok(!table_exists(conn, HISTORY_TABLE)?)
}

/// What `openmls_sqlite_storage`'s migrations make on an empty database.
pub(super) struct UpstreamSchema {
    /// The `CREATE` statement of each object, in the order they were made.
    objects: Vec<String>,
    /// Each table's name and rows.
    rows: Vec<(String, Vec<Vec<Value>>)>,
}

impl UpstreamSchema {
    /// Runs the migrations on a private in-memory database and reads back
    /// what they made.
    pub(super) fn build<C: PoolCodec>() -> Result<Self> {
        let mut scratch = Connection::open_in_memory()?;
        SqliteStorageProvider::<C, &mut Connection>::new(&mut scratch)
            .run_migrations()
            .map_err(|e| Error::migration("openmls_sqlite_storage", e))?;
        // Internal objects (sqlite_sequence, automatic indexes) come with the
        // objects that need them.
        let mut objects = scratch.prepare(
            "SELECT type, name, sql FROM sqlite_master
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
             ORDER BY rowid",
        )?;
        let objects: Vec<(String, String, String)> = objects
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut rows = Vec::new();
        for (kind, name, _) in objects.iter().filter(|(kind, ..)| kind == "table") {
            debug_assert_eq!(kind, "table");
            let mut select = scratch.prepare(&format!("SELECT * FROM {}", quoted(name)))?;
            let width = select.column_count();
            let table: Vec<Vec<Value>> = select
                .query_map([], |row| (0..width).map(|i| row.get(i)).collect())?
                .collect::<rusqlite::Result<_>>()?;
            if !table.is_empty() {
                rows.push((name.clone(), table));
            }
        }
        Ok(Self {
            objects: objects.into_iter().map(|(_, _, sql)| sql).collect(),
            rows,
        })
    }

    /// Makes the same objects and rows in `conn`, inside the caller's
    /// transaction.
    pub(super) fn install(&self, conn: &Connection) -> Result<()> {
        let failed = |e: rusqlite::Error| Error::migration("openmls_sqlite_storage", e);
        for sql in &self.objects {
            conn.execute_batch(sql).map_err(failed)?;
        }
        for (table, rows) in &self.rows {
            for row in rows {
                let marks = vec!["?"; row.len()].join(", ");
                conn.execute(
                    &format!("INSERT INTO {} VALUES ({marks})", quoted(table)),
                    params_from_iter(row),
                )
                .map_err(failed)?;
            }
        }
        Ok(())
    }
}

/// `name` as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
