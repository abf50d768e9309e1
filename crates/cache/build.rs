//! The migrations are embedded at compile time (`embed_migrations!`), which cargo cannot see:
//! rebuild when any file under `migrations/` changes, so a new migration is never left out.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
