use std::process::ExitCode;

use backup_service::cli;
use backup_service::cli::args::{Cli, Command, DocumentsCommand, TokenArgs};
use backup_service::config::{LogFormat, ServeConfig};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Buffers of 1 MiB and more (the zstd window, column blocks) are mapped
/// and unmapped on their own, so they go back to the system when freed.
/// glibc would otherwise raise its mmap threshold after the first such free
/// and keep later ones in per-thread arenas: a restore of a zstd backup held
/// 110 MiB instead of about 60.
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; no memory is touched.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(ServeConfig::from_env()).await,
        Some(Command::Serve(config)) => serve(*config).await,
        Some(Command::Token(args)) => token(args),
        Some(Command::Create(args)) => cli::create(args).await,
        Some(Command::Restore(args)) => cli::restore(args).await,
        Some(Command::Verify(args)) => cli::verify(args).await,
        Some(Command::Maintenance(args)) => cli::maintenance(args).await,
        Some(Command::RestoreFile(args)) => cli::restore_file(args).await,
        Some(Command::Documents(args)) => match args.command {
            DocumentsCommand::Extract(args) => cli::documents_extract(args).await,
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ServeConfig) -> Result<(), String> {
    init_logging(config.log_format);
    let running = backup_service::app::start(&config)
        .await
        .map_err(|e| e.message)?;
    if let Some(token) = &running.dev_token {
        tracing::warn!(
            "JWT_SECRET is not set: using a random secret for this run only (dev mode); \
             an admin token valid for 24h follows on stdout"
        );
        println!("{token}");
        tracing::info!(
            grpc = %running.grpc_addr,
            http = %running.http_addr,
            "next step: export BACKUP_TOKEN=<the token above>, then \
             `curl -H \"Authorization: Bearer $BACKUP_TOKEN\" http://{}/api/backup` or \
             `backup-service create --server http://{}`",
            running.http_addr,
            running.grpc_addr
        );
    }
    running.wait_for_signal().await;
    Ok(())
}

fn token(args: TokenArgs) -> Result<(), String> {
    backup_service::config::check_jwt_secret(&args.jwt_secret).map_err(|e| e.message)?;
    let auth = backup_service::api::auth::Authenticator::new(args.jwt_secret.as_bytes(), &[])
        .map_err(|e| e.message)?;
    let token = auth
        .issue(&args.user_id, &args.email, &args.role, args.ttl)
        .map_err(|e| e.message)?;
    println!("{token}");
    Ok(())
}
