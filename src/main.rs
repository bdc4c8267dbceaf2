// Requests allocate on a worker thread and the nonce writer frees some of it
// on its own; glibc's small per-thread caches overflow under load, mimalloc's
// do not (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keygate::cli::main()
}
