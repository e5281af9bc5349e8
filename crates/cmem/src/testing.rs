//! What tests share, from one file the integration tests compile too
//! (`tests/common/shared.rs`): NATS servers with JetStream for the cluster engines' suites (the
//! journal's and the team store's), and waiting for a condition.

#[path = "../tests/common/shared.rs"]
mod shared;

pub(crate) use shared::*;
