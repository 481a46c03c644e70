//! Guides: how the parts of this crate work together, one page each. Their
//! examples run as doc tests; the pages are the Markdown files under
//! `docs/guide/` in the repository.
//!
//! - [`operations`]: one OpenMLS operation, one commit; threads; SQLite's
//!   WAL-reset bug; the storage's status and logs.
//! - [`pool`]: the pool's rules and the calls that apply them.
//! - [`withdrawals`]: the outbox of KeyPackages a server should stop handing
//!   out, and the grace window.
//! - [`scopes`]: one pool per signature key, ciphersuite and credential.
//! - [`providers`]: crypto providers and post-quantum pools.
//! - [`codecs`]: the on-disk format of OpenMLS's entities.
//! - [`options`]: storage options, encryption at rest, erasure, and checks
//!   at start-up.
//!
//! And the measurements behind the claims, each figure with the command
//! that produced it (the Markdown files under `docs/`):
//!
//! - [`performance`]: every benchmark table.
//! - [`reliability`]: what is promised, what is not, and how each is
//!   tested.

#[doc = include_str!("../docs/guide/operations.md")]
pub mod operations {}

#[doc = include_str!("../docs/guide/pool.md")]
pub mod pool {}

#[doc = include_str!("../docs/guide/withdrawals.md")]
pub mod withdrawals {}

#[doc = include_str!("../docs/guide/scopes.md")]
pub mod scopes {}

#[doc = include_str!("../docs/guide/providers.md")]
pub mod providers {}

#[doc = include_str!("../docs/guide/codecs.md")]
pub mod codecs {}

#[doc = include_str!("../docs/guide/options.md")]
pub mod options {}

#[doc = include_str!("../docs/performance.md")]
pub mod performance {}

#[doc = include_str!("../docs/reliability.md")]
pub mod reliability {}
