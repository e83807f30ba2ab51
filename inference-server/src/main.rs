use clap::Parser;
use tokio::net::TcpListener;

use nlu_server::config::{Cli, Command, LogFormat};
use nlu_server::server::{init_logging, serve, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => {
            init_logging(args.log_format, args.audit_log.as_ref())?;
            args.batching.validate().map_err(anyhow::Error::msg)?;
            let listener = TcpListener::bind(args.listen).await?;
            serve(*args, listener, shutdown_signal()).await
        }
        Command::Download(args) => {
            init_logging(LogFormat::Text, None)?;
            let dir =
                tokio::task::spawn_blocking(move || nlu_server::cli_download::run(&args)).await??;
            println!("{}", dir.display());
            Ok(())
        }
        Command::Keygen(args) => {
            let (key, jwks) = nlu_server::cli_auth::keygen(&args)?;
            eprintln!(
                "wrote {} (private: keep it secret) and {} (public: --jwks)",
                key.display(),
                jwks.display()
            );
            Ok(())
        }
        Command::Token(args) => {
            println!("{}", nlu_server::cli_auth::token(&args)?);
            Ok(())
        }
    }
}
