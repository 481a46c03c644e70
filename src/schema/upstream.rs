//! `openmls_sqlite_storage`'s schema on a new file, in one commit.
//!
//! That crate's runner (refinery) applies each of its migrations in a
//! transaction of its own and records it in the next. A power cut between
//! the two leaves a migration applied and not recorded, and every later open
//! tries it again and fails ("table ... already exists"): the file never
//! opens. On a file without any of that crate's schema, the migrations run
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
//! and not recorded (or several: a database from the deprecated
//! `initialize()` has them all, recorded under another history table). It
//! records the next one, then the next two, and so on, on an in-memory copy
//! of the file's schema, running the rest each time; once the copy then
//! holds every object the migrations make on a new database, statement for
//! statement, those migrations were applied: they are recorded in the
//! file, and the runner runs again. Otherwise the runner's error stands.
//! (A migration that only changes rows, and no schema object, cannot be
//! told applied this way; none of `openmls_sqlite_storage`'s does.)

use openmls_sqlite_storage::SqliteStorageProvider;
use rusqlite::{params_from_iter, types::Value, Connection, TransactionBehavior};

use crate::{
    catalog::table_exists,
    codec::PoolCodec,
    error::{Error, Result},
};

/// The history table `openmls_sqlite_storage` names for its runner.
const HISTORY_TABLE: &str = "openmls_sqlite_storage_migrations";

/// `openmls_sqlite_storage`'s schema, to make in the caller's transaction,
/// if `conn` has none of it: no history table, and none of the objects its
/// migrations make (a database from its deprecated `initialize()` has them
/// under another history table, and goes through the runner).
pub(super) fn for_new_file<C: PoolCodec>(conn: &Connection) -> Result<Option<UpstreamSchema>> {
    if table_exists(conn, HISTORY_TABLE)? {
        return Ok(None);
    }
    let fresh = UpstreamSchema::build::<C>()?;
    let present: Vec<String> = objects(conn)?
        .into_iter()
        .map(|(_, name, _)| name)
        .collect();
    let untouched = fresh
        .objects
        .iter()
        .all(|(name, _)| !present.contains(name));
    Ok(untouched.then_some(fresh))
}

/// What `openmls_sqlite_storage`'s migrations make on an empty database.
pub(super) struct UpstreamSchema {
    /// The name and `CREATE` statement of each object, in the order they
    /// were made.
    objects: Vec<(String, String)>,
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
            objects: objects
                .into_iter()
                .map(|(_, name, sql)| (name, sql))
                .collect(),
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
        for (_, sql) in &self.objects {
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
/// history; if the runner fails, records the migrations the file shows
/// applied and not recorded (see the module's docs), and runs it again.
pub(super) fn upgrade<C: PoolCodec>(conn: &mut Connection) -> Result<()> {
    let Err(error) = run::<C>(conn) else {
        return Ok(());
    };
    // Whatever goes wrong looking for such migrations, the runner's error
    // says more.
    let Ok(fresh) = UpstreamSchema::build::<C>() else {
        return Err(error);
    };
    let Ok(Some(rows)) = applied_unrecorded::<C>(conn, &fresh) else {
        return Err(error);
    };
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let recorded = rows.len();
    for row in rows {
        insert(&tx, HISTORY_TABLE, row)?;
    }
    tx.commit()?;
    log::warn!(
        "openmls_sqlite_storage's migrations failed ({error}); recorded {recorded} \
         that the schema shows applied (an interrupted upgrade leaves them so), and runs \
         them again"
    );
    run::<C>(conn)
}

/// The history rows of the migrations after the last one `conn` records
/// that its schema shows applied: the fewest that, recorded on an
/// in-memory copy of the schema, let the runner bring the copy to every
/// object `fresh` has. `None` if no number of them does.
fn applied_unrecorded<'a, C: PoolCodec>(
    conn: &Connection,
    fresh: &'a UpstreamSchema,
) -> Result<Option<Vec<&'a Vec<Value>>>> {
    let recorded: i64 = conn.query_row(
        &format!(
            "SELECT COALESCE(MAX(version), 0) FROM {}",
            quoted(HISTORY_TABLE)
        ),
        [],
        |row| row.get(0),
    )?;
    let schema = objects(conn)?;
    let history = table_rows(conn, HISTORY_TABLE)?;
    let mut unrecorded = Vec::new();
    let mut version = recorded;
    loop {
        // A history past every migration this build knows: nothing to add.
        let Some(next) = version.checked_add(1).and_then(|v| fresh.history_row(v)) else {
            return Ok(None);
        };
        version += 1;
        unrecorded.push(next);
        let mut trial = Connection::open_in_memory()?;
        let ran = (|| -> Result<()> {
            for (_, _, sql) in &schema {
                trial.execute_batch(sql)?;
            }
            for row in history.iter().chain(unrecorded.iter().copied()) {
                insert(&trial, HISTORY_TABLE, row)?;
            }
            run::<C>(&mut trial)
        })();
        if ran.is_err() {
            continue;
        }
        let made: Vec<String> = objects(&trial)?.into_iter().map(|(.., sql)| sql).collect();
        return Ok(fresh
            .objects
            .iter()
            .all(|(_, sql)| made.contains(sql))
            .then_some(unrecorded));
    }
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
