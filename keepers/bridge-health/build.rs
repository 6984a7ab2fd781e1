// `sqlx::migrate!` embeds `migrations/bridge-health/*.sql` at build time; without this a newly added
// migration would not be picked up by an incremental build.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations/bridge-health");
}
