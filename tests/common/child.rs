//! Other processes for a test to work beside: the test binary itself, re-run
//! on one of its own tests (named `child`) with `ERASURE_CHILD` set to a role
//! and `ERASURE_DB` to the database.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

/// What a child prints when it is ready; the lines before are its report.
pub const READY: &str = "erasure-child-ready";

/// A child process, killed when dropped, so that a failing assertion never
/// leaves one running.
pub struct Killed(pub Child);

impl Killed {
    /// Closes the child's standard input (a reader then ends its
    /// transaction) and waits for it to exit; returns whether it succeeded.
    pub fn release(&mut self) -> bool {
        drop(self.0.stdin.take());
        self.0.wait().is_ok_and(|status| status.success())
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this binary's `child` test in the role `role` on `db`, and waits
/// for the line it prints when it is ready; returns it with the lines it
/// printed before.
pub fn start(role: &str, db: &Path) -> (Killed, Vec<String>) {
    let mut child = Killed(
        Command::new(std::env::current_exe().unwrap())
            .args(["child", "--exact", "--nocapture", "--test-threads=1"])
            .env("ERASURE_CHILD", role)
            .env("ERASURE_DB", db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut printed = Vec::new();
    // libtest prints "test child ... " before the child's own output on the
    // same line, so tokens are looked for anywhere in a line.
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    for line in lines.by_ref() {
        if line.contains(READY) {
            // The rest is read and dropped, so that the child never writes
            // into a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, printed);
        }
        printed.push(line);
    }
    panic!("the {role} child never became ready: {printed:?}");
}

/// The role and database this process was started with as a child, if it
/// was.
pub fn role() -> Option<(String, PathBuf)> {
    let role = std::env::var("ERASURE_CHILD").ok()?;
    let db = std::env::var_os("ERASURE_DB")?;
    Some((role, PathBuf::from(db)))
}

/// The reader role: holds a read transaction on `db` until its standard
/// input closes.
pub fn hold_read_transaction(db: &Path) {
    let reader = rusqlite::Connection::open(db).unwrap();
    reader
        .execute_batch("BEGIN; SELECT COUNT(*) FROM sqlite_master;")
        .unwrap();
    println!("{READY}");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
    reader.execute_batch("COMMIT").unwrap();
}
