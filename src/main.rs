//! `airgap`: the command line. A thin layer over the `airgap` core and the `bundler` and
//! `installer` libraries: it parses arguments, adds context to errors, shows progress, and
//! prints one line on failure.
//!
//! No unsafe code here (the workspace's `unsafe_code = "forbid"`; the package's own
//! integration tests need libc for namespaces and signals, so it is set here, not in
//! Cargo.toml).

#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    installer::files::restrict_umask();
    installer::files::raise_open_files_limit();
    let args = cli::Cli::parse();
    if !args.command.is_service() {
        installer::files::quiet_on_broken_pipe();
    }
    cli::init_logging(args.verbose);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the context chain joined, as cargo does, then the next step if the
            // error knows one.
            let hint = err.chain().find_map(|cause| {
                cause
                    .downcast_ref::<installer::error::InstallError>()
                    .and_then(|e| e.hint())
            });
            let mut line = format!("error: {err:#}");
            // A full disk, here or on a registry's: nothing partial was kept, so the same
            // command is the next step once there is room.
            let disk_full = err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::StorageFull)
            }) || line.contains("No space left on device");
            if let Some(hint) = hint {
                line.push_str(&format!("; hint: {hint}"));
            } else if disk_full {
                line.push_str("; hint: free space there and run the same command again: it resumes from what is complete");
            }
            eprintln!("{}", line.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
