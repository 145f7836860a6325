//! CLI commands that talk to a running server over gRPC, and the offline
//! restore. Each prints JSON on stdout; progress goes to stderr.

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub mod args;

use crate::proto;
use crate::proto::backup_service_client::BackupServiceClient;
use args::{
    CreateArgs, ExtractArgs, MaintenanceArgs, RestoreArgs, RestoreFileArgs, ServerArgs, Switch,
    VerifyArgs,
};

type Bearer =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Client = BackupServiceClient<InterceptedService<Channel, Bearer>>;

fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

async fn connect(args: &ServerArgs) -> Result<Client, String> {
    let channel = tonic::transport::Endpoint::from_shared(args.server.clone())
        .map_err(|e| format!("invalid --server: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", args.server))?;
    let bearer: MetadataValue<_> = format!("Bearer {}", args.token)
        .parse()
        .map_err(|_| "token contains invalid characters".to_string())?;
    let interceptor: Bearer = Box::new(move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    });
    Ok(BackupServiceClient::with_interceptor(channel, interceptor))
}

pub async fn create(args: CreateArgs) -> Result<(), String> {
    let mut client = connect(&args.server).await?;
    let backup = client
        .create_backup(proto::CreateBackupRequest {
            description: args.description,
            include_documents: Some(!args.no_documents),
            r#async: args.run_async,
            compression: args.compression.unwrap_or_default(),
        })
        .await
        .map_err(status_text)?
        .into_inner();
    let json = serde_json::json!({
        "backupId": backup.backup_id,
        "filename": backup.filename,
        "size": backup.size,
        "sha256": backup.sha256,
        "status": backup.status().as_str_name(),
        "rowCounts": backup.row_counts,
        "documentCount": backup.document_count,
        "documentBytes": backup.document_bytes,
        "warningCount": backup.warning_count,
        "missingDocuments": backup
            .missing_documents
            .iter()
            .map(|m| serde_json::json!({"url": m.url, "reason": m.reason}))
            .collect::<Vec<_>>(),
    });
    println!("{json}");
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> Result<(), String> {
    let mut client = connect(&args.server).await?;
    let mut stream = client
        .restore_backup(proto::RestoreBackupRequest {
            backup_id: args.backup_id,
            target_url: args.target_url.unwrap_or_default(),
            dry_run: args.dry_run,
            skip_safety_backup: args.skip_safety_backup,
            documents_dir: args.documents_dir.unwrap_or_default(),
        })
        .await
        .map_err(status_text)?
        .into_inner();
    let mut last = None;
    while let Some(update) = stream.message().await.map_err(status_text)? {
        eprintln!(
            "{} {} {}/{} rows, {}/{} tables {}",
            update.phase().as_str_name(),
            update.table,
            update.rows_done,
            update.rows_total,
            update.tables_done,
            update.tables_total,
            update.message
        );
        last = Some(update);
    }
    let last = last.ok_or("the server sent no progress")?;
    let json = serde_json::json!({
        "phase": last.phase().as_str_name(),
        "safetyBackupId": last.safety_backup_id,
        "rowCounts": last.row_counts,
        "documentsWritten": last.documents_written,
        "documentsDir": last.documents_dir,
    });
    println!("{json}");
    Ok(())
}

pub async fn verify(args: VerifyArgs) -> Result<(), String> {
    let mut client = connect(&args.server).await?;
    let report = client
        .verify_backup(proto::VerifyBackupRequest {
            backup_id: args.backup_id,
            scratch_database_url: args.scratch_database_url.unwrap_or_default(),
        })
        .await
        .map_err(status_text)?
        .into_inner();
    let json = serde_json::json!({
        "backupId": report.backup_id,
        "ok": report.ok,
        "size": report.size,
        "sha256": report.sha256,
        "sha256Matches": report.sha256_matches,
        "rowCounts": report.row_counts,
        "problems": report.problems,
        "testRestorePerformed": report.test_restore_performed,
        "testRestoreOk": report.test_restore_ok,
    });
    println!("{json}");
    if report.ok {
        Ok(())
    } else {
        Err("verification failed".into())
    }
}

pub async fn maintenance(args: MaintenanceArgs) -> Result<(), String> {
    let mut client = connect(&args.server).await?;
    let state = match args.switch {
        Switch::Status => {
            client
                .get_maintenance_mode(proto::GetMaintenanceModeRequest {})
                .await
        }
        Switch::On | Switch::Off => {
            client
                .set_maintenance_mode(proto::SetMaintenanceModeRequest {
                    enabled: args.switch == Switch::On,
                    reason: args.reason,
                })
                .await
        }
    }
    .map_err(status_text)?
    .into_inner();
    println!(
        "{}",
        serde_json::json!({"enabled": state.enabled, "reason": state.reason, "changedBy": state.changed_by})
    );
    Ok(())
}

pub async fn restore_file(args: RestoreFileArgs) -> Result<(), String> {
    let outcome = crate::backup::restore::restore_file(&args.path, &args.target_url, args.dry_run)
        .await
        .map_err(|e| e.message)?;
    println!(
        "{}",
        serde_json::to_string(&outcome).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// `documents extract`: from a downloaded file, or a backup id downloaded
/// through the server first (into a temp file, its sha256 checked against
/// the server's), then checked whole before anything is written.
pub async fn documents_extract(args: ExtractArgs) -> Result<(), String> {
    let path = std::path::Path::new(&args.source);
    let report = if path.exists() {
        crate::backup::restore::extract_file(path, &args.dir)
            .await
            .map_err(|e| e.message)?
    } else {
        let id = crate::backup::id::BackupId::parse(&args.source)
            .map_err(|_| format!("{:?} is neither a file nor a backup id", args.source))?;
        let token = args
            .token
            .clone()
            .ok_or("--token (or BACKUP_TOKEN) is needed to download a backup from the server")?;
        let mut client = connect(&ServerArgs {
            server: args.server.clone(),
            token,
        })
        .await?
        .max_decoding_message_size(64 * 1024 * 1024);
        let downloaded = download_to_temp(&mut client, id.as_str()).await?;
        crate::backup::restore::extract_file(downloaded.path(), &args.dir)
            .await
            .map_err(|e| e.message)?
    };
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    );
    Ok(())
}

async fn download_to_temp(
    client: &mut Client,
    id: &str,
) -> Result<tempfile::NamedTempFile, String> {
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let temp = tempfile::NamedTempFile::new().map_err(|e| format!("creating a temp file: {e}"))?;
    let file = temp
        .reopen()
        .map_err(|e| format!("opening a temp file: {e}"))?;
    let mut out = tokio::io::BufWriter::new(tokio::fs::File::from_std(file));
    let mut stream = client
        .download_backup(proto::DownloadBackupRequest {
            backup_id: id.to_string(),
            offset: 0,
        })
        .await
        .map_err(status_text)?
        .into_inner();
    let mut hasher = sha2::Sha256::new();
    let mut expected = None;
    while let Some(message) = stream.message().await.map_err(status_text)? {
        if expected.is_none() {
            expected = Some(message.sha256.clone());
        }
        hasher.update(&message.chunk);
        out.write_all(&message.chunk)
            .await
            .map_err(|e| format!("writing the download: {e}"))?;
    }
    out.flush()
        .await
        .map_err(|e| format!("writing the download: {e}"))?;
    let got = hex::encode(hasher.finalize());
    match expected {
        Some(sha) if sha == got => Ok(temp),
        Some(sha) => Err(format!(
            "the download has sha256 {got}, the server announced {sha}"
        )),
        None => Err("the server sent nothing".into()),
    }
}
