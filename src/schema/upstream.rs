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
//! A file that has the history (written by an older `openmls_sqlite_storage`,
//! or opened before it added migrations) still migrates through the runner:
//! its migrations cannot be applied any other way without repeating their
//! SQL here. When the runner fails there, [`upgrade`] looks for the state a
//! crash between its two transactions leaves: the next migration applied
//! and not recorded. It tries recording it on an in-memory copy of the
//! file's schema and running the rest; if that ends with every object the
//! migrations make on a new database, exactly, the migration was applied,
//! and it is recorded in the file, and the runner runs again. Otherwise the
//! runner's error stands. (A migration that only changes rows, and no
//! schema object, cannot be told applied this way; none of
//! `openmls_sqlite_storage`'s does.)

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
        run::<C>(&mut scratch)?;
        let objects = objects(&scratch)?;
        let mut rows = Vec::new();
        for (_, name, _) in objects.iter().filter(|(kind, ..)| kind == "table") {
            let table = table_rows(&scratch, name)?;
            if !table.is_empty() {
                rows.push((name.clone(), table));
            }
        }
        Ok(Self {
            objects: objects.into_iter().map(|(_, _, sql)| sql).collect(),
            rows,
        })
    }

    /// The runner's history row of migration `version`.
    fn history_row(&self, version: i64) -> Option<&Vec<Value>> {
        self.rows
            .iter()
            .find(|(table, _)| table == HISTORY_TABLE)?
            .1
            .iter()
            .find(|row| row.first() == Some(&Value::Integer(version)))
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
                insert(conn, table, row).map_err(failed)?;
            }
        }
        Ok(())
    }
}

/// Runs `openmls_sqlite_storage`'s migrations on a file that has its
/// history; if the runner fails, records the migrations a crash left
/// applied and unrecorded (see the module's docs), and runs it again.
pub(super) fn upgrade<C: PoolCodec>(conn: &mut Connection) -> Result<()> {
    let mut error = match run::<C>(conn) {
        Ok(()) => return Ok(()),
        Err(error) => error,
    };
    let fresh = UpstreamSchema::build::<C>()?;
    // Each pass records one migration: a crash leaves at most one applied
    // and unrecorded, but each open may have been cut short once.
    for _ in 0..fresh.objects.len() {
        let Some(row) = applied_unrecorded::<C>(conn, &fresh)? else {
            return Err(error);
        };
        insert(conn, HISTORY_TABLE, row)?;
        match run::<C>(conn) {
            Ok(()) => return Ok(()),
            Err(again) => error = again,
        }
    }
    Err(error)
}

/// The history row of the migration after the last one `conn` records, if
/// `conn`'s schema shows it applied: recorded on an in-memory copy of the
/// schema, the runner then brings the copy to every object `fresh` has.
fn applied_unrecorded<'a, C: PoolCodec>(
    conn: &Connection,
    fresh: &'a UpstreamSchema,
) -> Result<Option<&'a Vec<Value>>> {
    let recorded: i64 = conn.query_row(
        &format!(
            "SELECT COALESCE(MAX(version), 0) FROM {}",
            quoted(HISTORY_TABLE)
        ),
        [],
        |row| row.get(0),
    )?;
    let Some(next) = fresh.history_row(recorded + 1) else {
        return Ok(None);
    };
    let mut trial = Connection::open_in_memory()?;
    let copied = (|| -> Result<()> {
        for (_, _, sql) in objects(conn)? {
            trial.execute_batch(&sql)?;
        }
        for row in table_rows(conn, HISTORY_TABLE)?.iter().chain([next]) {
            insert(&trial, HISTORY_TABLE, row)?;
        }
        run::<C>(&mut trial)
    })();
    if copied.is_err() {
        return Ok(None);
    }
    let made: Vec<String> = objects(&trial)?.into_iter().map(|(.., sql)| sql).collect();
    Ok(fresh
        .objects
        .iter()
        .all(|sql| made.contains(sql))
        .then_some(next))
}

/// `openmls_sqlite_storage`'s runner on `conn`.
fn run<C: PoolCodec>(conn: &mut Connection) -> Result<()> {
    SqliteStorageProvider::<C, &mut Connection>::new(conn)
        .run_migrations()
        .map_err(|e| Error::migration("openmls_sqlite_storage", e))
}

/// Every schema object of `conn` as (type, name, `CREATE` statement), in
/// the order they were made. Internal objects (`sqlite_sequence`,
/// automatic indexes) are left out: they come with the objects that need
/// them.
fn objects(conn: &Connection) -> Result<Vec<(String, String, String)>> {
    let mut select = conn.prepare(
        "SELECT type, name, sql FROM sqlite_master
         WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
         ORDER BY rowid",
    )?;
    let objects = select
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(objects)
}

/// Every row of `table`.
fn table_rows(conn: &Connection, table: &str) -> Result<Vec<Vec<Value>>> {
    let mut select = conn.prepare(&format!("SELECT * FROM {}", quoted(table)))?;
    let width = select.column_count();
    let rows = select
        .query_map([], |row| (0..width).map(|i| row.get(i)).collect())?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

fn insert(conn: &Connection, table: &str, row: &[Value]) -> rusqlite::Result<usize> {
    let marks = vec!["?"; row.len()].join(", ");
    conn.execute(
        &format!("INSERT INTO {} VALUES ({marks})", quoted(table)),
        params_from_iter(row),
    )
}

/// `name` as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
