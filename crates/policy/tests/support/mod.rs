//! Test support shared by the policy tests (and, by path, the benches).
pub mod cases;
