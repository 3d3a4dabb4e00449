//! The `smpfs` command line.

mod cli;

/// Wipes freed heap blocks once a command that parses plaintext calls `heap::protect`.
#[global_allocator]
static ALLOCATOR: smpfs::heap::ZeroOnFree = smpfs::heap::ZeroOnFree;

fn main() -> std::process::ExitCode {
    cli::main()
}
