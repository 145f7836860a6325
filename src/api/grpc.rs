//! The gRPC adapter: BackupService over the core, the auth interceptor,
//! health and reflection.

use std::sync::Arc;

use futures::StreamExt;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::auth::Authenticator;
use super::convert;
use crate::backup::restore::RestoreOptions;
use crate::backup::{Backups, CreateRequest, Principal};
use crate::proto;
use crate::proto::backup_service_server::{BackupService, BackupServiceServer};

pub const SERVICE_NAME: &str = "backup.v1.BackupService";

pub struct GrpcApi {
    core: Arc<Backups>,
}

/// The interceptor: the shared admin check, principal into extensions.
pub fn interceptor(
    auth: Arc<Authenticator>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or(""));
        match auth.authenticate(header) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                Ok(request)
            }
            Err(e) => {
                tracing::warn!(reason = %e.message, "gRPC request refused");
                Err(e.into())
            }
        }
    }
}

pub fn service(
    core: Arc<Backups>,
    auth: Arc<Authenticator>,
) -> tonic::service::interceptor::InterceptedService<
    BackupServiceServer<GrpcApi>,
    impl tonic::service::Interceptor + Clone,
> {
    BackupServiceServer::with_interceptor(GrpcApi { core }, interceptor(auth))
}

fn principal<T>(request: &Request<T>) -> Principal {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_default()
}

fn rpc_span(method: &'static str, who: &Principal, backup_id: &str) -> tracing::Span {
    tracing::info_span!("rpc", method, principal = %who.label(), backup_id = %backup_id)
}

type RestoreStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<proto::RestoreProgress, Status>> + Send>>;

type DownloadStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<proto::DownloadBackupResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl BackupService for GrpcApi {
    async fn create_backup(
        &self,
        request: Request<proto::CreateBackupRequest>,
    ) -> Result<Response<proto::Backup>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        let span = rpc_span("CreateBackup", &who, "");
        let create = CreateRequest {
            description: req.description,
            include_documents: req.include_documents,
            run_async: req.r#async,
            ..Default::default()
        };
        let record = self.core.create(create, &who).instrument(span).await?;
        Ok(Response::new(convert::backup(record)))
    }

    async fn list_backups(
        &self,
        request: Request<proto::ListBackupsRequest>,
    ) -> Result<Response<proto::ListBackupsResponse>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        let page = self
            .core
            .list(req.page_size as usize, &req.page_token)
            .instrument(rpc_span("ListBackups", &who, ""))
            .await?;
        Ok(Response::new(proto::ListBackupsResponse {
            backups: page.backups.into_iter().map(convert::backup).collect(),
            total: page.total,
            cloudinary_stats: Some(proto::CloudinaryStats {
                total_size: page.completed_bytes,
                count: page.completed_count,
            }),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_backup(
        &self,
        request: Request<proto::GetBackupRequest>,
    ) -> Result<Response<proto::Backup>, Status> {
        let who = principal(&request);
        let id = request.into_inner().backup_id;
        let record = self
            .core
            .get(&id)
            .instrument(rpc_span("GetBackup", &who, &id))
            .await?;
        Ok(Response::new(convert::backup(record)))
    }

    async fn delete_backup(
        &self,
        request: Request<proto::DeleteBackupRequest>,
    ) -> Result<Response<proto::DeleteBackupResponse>, Status> {
        let who = principal(&request);
        let id = request.into_inner().backup_id;
        let record = self
            .core
            .delete(&id)
            .instrument(rpc_span("DeleteBackup", &who, &id))
            .await?;
        Ok(Response::new(proto::DeleteBackupResponse {
            message: format!("backup {} deleted", record.backup_id),
            backup_id: record.backup_id,
            deleted: true,
        }))
    }

    type DownloadBackupStream = DownloadStream;

    async fn download_backup(
        &self,
        request: Request<proto::DownloadBackupRequest>,
    ) -> Result<Response<Self::DownloadBackupStream>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        let span = rpc_span("DownloadBackup", &who, &req.backup_id);
        let download = self
            .core
            .download(&req.backup_id, req.offset)
            .instrument(span.clone())
            .await?;
        span.in_scope(|| tracing::info!(offset = download.offset, "download started"));
        let record = download.record;
        let mut first = Some(proto::DownloadBackupResponse {
            chunk: Default::default(),
            offset: download.offset,
            filename: record.filename.clone(),
            size: record.size,
            sha256: record.sha256.clone(),
            content_type: "application/json".into(),
        });
        let mut offset = download.offset;
        let chunks = download.stream.map(move |chunk| {
            let chunk = chunk.map_err(Status::from)?;
            let mut message = first.take().unwrap_or_default();
            message.offset = offset;
            offset += chunk.len() as u64;
            message.chunk = chunk;
            Ok(message)
        });
        // An empty remainder (offset == size) still sends the metadata message.
        let stream: DownloadStream = if record.size == download.offset {
            let meta = proto::DownloadBackupResponse {
                chunk: Default::default(),
                offset: record.size,
                filename: record.filename,
                size: record.size,
                sha256: record.sha256,
                content_type: "application/json".into(),
            };
            Box::pin(futures::stream::once(async move { Ok(meta) }))
        } else {
            Box::pin(chunks)
        };
        Ok(Response::new(stream))
    }

    type RestoreBackupStream = RestoreStream;

    async fn restore_backup(
        &self,
        request: Request<proto::RestoreBackupRequest>,
    ) -> Result<Response<Self::RestoreBackupStream>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        let span = rpc_span("RestoreBackup", &who, &req.backup_id);
        let options = RestoreOptions {
            target_url: Some(req.target_url).filter(|u| !u.is_empty()),
            dry_run: req.dry_run,
            skip_safety_backup: req.skip_safety_backup,
        };
        let (updates, mut progress) = tokio::sync::mpsc::channel(64);
        let core = self.core.clone();
        let id = req.backup_id.clone();
        // The restore runs to commit or rollback even if the client goes away.
        let mut job = tokio::spawn(
            async move { core.restore(&id, options, &who, updates).await }.instrument(span),
        );
        // Refusals before any progress (no maintenance mode, unknown id) fail the call itself.
        let first = tokio::select! {
            update = progress.recv() => update,
            result = &mut job => {
                let outcome = match result {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(e)) => return Err(e.into()),
                    Err(e) => return Err(Status::internal(format!("restore task failed: {e}"))),
                };
                let rest = tokio_stream::wrappers::ReceiverStream::new(progress)
                    .map(|u| Ok(convert::restore_progress(u)));
                let last = futures::stream::once(async move { Ok(final_message(outcome)) });
                return Ok(Response::new(Box::pin(rest.chain(last))));
            }
        };
        let stream = async_stream_of(first, progress, job);
        Ok(Response::new(stream))
    }

    async fn verify_backup(
        &self,
        request: Request<proto::VerifyBackupRequest>,
    ) -> Result<Response<proto::VerifyBackupResponse>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        let report = self
            .core
            .verify(&req.backup_id, Some(req.scratch_database_url))
            .instrument(rpc_span("VerifyBackup", &who, &req.backup_id))
            .await?;
        Ok(Response::new(convert::verify(report)))
    }

    async fn get_maintenance_mode(
        &self,
        _request: Request<proto::GetMaintenanceModeRequest>,
    ) -> Result<Response<proto::MaintenanceMode>, Status> {
        Ok(Response::new(convert::maintenance(self.core.maintenance())))
    }

    async fn set_maintenance_mode(
        &self,
        request: Request<proto::SetMaintenanceModeRequest>,
    ) -> Result<Response<proto::MaintenanceMode>, Status> {
        let who = principal(&request);
        let req = request.into_inner();
        let state = self
            .core
            .set_maintenance(req.enabled, req.reason, &who)
            .instrument(rpc_span("SetMaintenanceMode", &who, ""))
            .await?;
        Ok(Response::new(convert::maintenance(state)))
    }
}

/// Progress messages, then the outcome: the final message carries the row
/// counts, or the stream ends with the restore's error.
fn async_stream_of(
    first: Option<crate::backup::restore::RestoreUpdate>,
    progress: tokio::sync::mpsc::Receiver<crate::backup::restore::RestoreUpdate>,
    job: tokio::task::JoinHandle<crate::error::Result<crate::backup::restore::RestoreOutcome>>,
) -> RestoreStream {
    let head = futures::stream::iter(first.map(|u| Ok(convert::restore_progress(u))));
    let middle = tokio_stream::wrappers::ReceiverStream::new(progress)
        .map(|u| Ok(convert::restore_progress(u)));
    let tail = futures::stream::once(async move {
        match job.await {
            Ok(Ok(outcome)) => Ok(final_message(outcome)),
            Ok(Err(e)) => Err(Status::from(e)),
            Err(e) => Err(Status::internal(format!("restore task failed: {e}"))),
        }
    });
    Box::pin(head.chain(middle).chain(tail))
}

fn final_message(outcome: crate::backup::restore::RestoreOutcome) -> proto::RestoreProgress {
    use crate::backup::restore::{RestorePhase, RestoreUpdate};
    let rows: u64 = outcome.row_counts.values().sum();
    let tables = outcome.row_counts.len() as u32;
    let mut last = convert::restore_progress(RestoreUpdate {
        phase: if outcome.dry_run {
            RestorePhase::DryRunPassed
        } else {
            RestorePhase::Committed
        },
        table: String::new(),
        rows_done: rows,
        rows_total: rows,
        tables_done: tables,
        tables_total: tables,
        safety_backup_id: outcome.safety_backup_id.unwrap_or_default(),
        message: "restore finished".into(),
    });
    last.row_counts = outcome.row_counts.into_iter().collect();
    last
}
