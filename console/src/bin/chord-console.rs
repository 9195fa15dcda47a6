//! `chord-console`: the operator's console for a chord-dfs ring. With no
//! command it opens the TUI; otherwise it runs one headless command.

use std::process::ExitCode;

use chord_console::cli::{self, Cli};
use chord_console::output::StdoutError;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_none() {
        // The TUI owns the terminal: its logs go to a file.
        let log = cli.tui.log_path();
        if let Err(e) = chord_console::tui::log_to_file(&log) {
            eprintln!("chord-console: {e:#}");
            return ExitCode::FAILURE;
        }
    } else if std::env::var_os("RUST_LOG").is_some() {
        // Logs go to stderr only when asked for, so they never mix with output.
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    // Loaded before anything connects: every call this process makes
    // carries it.
    match chord_node::auth::ClusterToken::load(cli.token_file.as_deref()) {
        Ok(token) => {
            chord_node::auth::set_process_token(token);
        }
        Err(e) => {
            eprintln!("chord-console: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Likewise the CA: with one, every call goes over TLS.
    match cli
        .tls_ca
        .as_deref()
        .map(chord_node::tls::TrustedCa::from_file)
        .transpose()
    {
        Ok(ca) => {
            chord_node::tls::set_process_ca(ca);
        }
        Err(e) => {
            eprintln!("chord-console: --tls-ca: {e}");
            return ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chord-console: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output closed it (`| head`): it had what it
        // wanted, so there is nothing to report.
        Err(e)
            if e.downcast_ref::<StdoutError>()
                .is_some_and(StdoutError::is_closed_pipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chord-console: {e:#}");
            ExitCode::FAILURE
        }
    }
}
