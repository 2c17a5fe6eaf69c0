//! `detcd`: starts one member. The flags are etcd's (`detcd --help`).

use detcd::server::config::{self, Command};

#[global_allocator]
static ALLOCATOR: detcd::allocator::MiMalloc = detcd::allocator::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Variables that are not Unicode name no flag of ours (and would make `vars` panic).
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .collect();
    let cfg = match config::parse(&args, &env) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Restore { file, cfg }) => {
            if let Err(e) = detcd::server::restore::restore(&file, &cfg) {
                eprintln!("detcd: {e}");
                std::process::exit(1);
            }
            return;
        }
        Ok(Command::Help) => {
            print!("{}", config::usage());
            return;
        }
        Ok(Command::Version) => {
            println!(
                "detcd Version: {}\nAPI Version: 3.6",
                env!("CARGO_PKG_VERSION")
            );
            return;
        }
        Err(e) => {
            eprintln!("detcd: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = detcd::server::run(*cfg) {
        eprintln!("detcd: {e}");
        std::process::exit(1);
    }
}
