//! The gRPC adapter: BackupService over the core, the auth interceptor,
//! health and reflection. Every call is metered and admin actions audited.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::auth::Authenticator;
use super::checked_stream::{Expected, Fault, Window, checked};
use super::convert;
use crate::backup::restore::{RestoreOptions, RestoreOutcome, RestorePhase, RestoreUpdate};
use crate::backup::{Backups, CreateRequest, Principal};
use crate::error::Result;
use crate::proto;
use crate::proto::backup_service_server::{BackupService, BackupServiceServer};
use crate::telemetry::{self, Action};

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
        let result = auth.authenticate(header);
        match result {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                Ok(request)
            }
            Err(e) => {
                let refused: Result<()> = Err(e.clone());
                telemetry::audit(
                    Action::Authenticate,
                    None,
                    "",
                    request.remote_addr(),
                    &refused,
                );
                telemetry::request_finished(
                    "grpc",
                    "unauthenticated",
                    super::status::code_name(e.code),
                    Default::default(),
                );
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

/// One call in flight: who, from where, since when.
struct Call {
    method: &'static str,
    action: Action,
    who: Principal,
    peer: Option<SocketAddr>,
    started: Instant,
    backup_id: String,
}

impl Call {
    fn new<T>(method: &'static str, action: Action, request: &Request<T>, backup_id: &str) -> Self {
        Self {
            method,
            action,
            who: request
                .extensions()
                .get::<Principal>()
                .cloned()
                .unwrap_or_default(),
            peer: request.remote_addr(),
            started: Instant::now(),
            backup_id: backup_id.to_string(),
        }
    }

    fn span(&self) -> tracing::Span {
        tracing::info_span!("rpc", method = self.method, principal = %self.who.label(), backup_id = %self.backup_id)
    }

    /// Meters and audits the outcome, then hands it to tonic.
    fn finish<T>(&self, result: Result<T>) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => "OK",
            Err(e) => super::status::code_name(e.code),
        };
        telemetry::request_finished("grpc", self.method, code, self.started.elapsed());
        telemetry::audit(
            self.action,
            Some(&self.who),
            &self.backup_id,
            self.peer,
            &result,
        );
        result.map_err(Status::from)
    }
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
        let mut call = Call::new("CreateBackup", Action::Create, &request, "");
        let req = request.into_inner();
        let create = CreateRequest {
            description: req.description,
            include_documents: req.include_documents,
            run_async: req.r#async,
            compression: match req.compression.as_str() {
                "" => None,
                other => match crate::format::codec::Compression::parse(other) {
                    Ok(c) => Some(c),
                    Err(e) => return Err(call.finish::<()>(Err(e)).unwrap_err()),
                },
            },
            ..Default::default()
        };
        let result = self
            .core
            .create(create, &call.who)
            .instrument(call.span())
            .await;
        if let Ok(record) = &result {
            call.backup_id = record.backup_id.clone();
        }
        let record = call.finish(result)?;
        Ok(Response::new(convert::backup(record)))
    }

    async fn list_backups(
        &self,
        request: Request<proto::ListBackupsRequest>,
    ) -> Result<Response<proto::ListBackupsResponse>, Status> {
        let call = Call::new("ListBackups", Action::List, &request, "");
        let req = request.into_inner();
        let result = self
            .core
            .list(req.page_size as usize, &req.page_token)
            .instrument(call.span())
            .await;
        let page = call.finish(result)?;
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
        let call = Call::new(
            "GetBackup",
            Action::Get,
            &request,
            &request.get_ref().backup_id,
        );
        let result = self.core.get(&call.backup_id).instrument(call.span()).await;
        Ok(Response::new(convert::backup(call.finish(result)?)))
    }

    async fn delete_backup(
        &self,
        request: Request<proto::DeleteBackupRequest>,
    ) -> Result<Response<proto::DeleteBackupResponse>, Status> {
        let call = Call::new(
            "DeleteBackup",
            Action::Delete,
            &request,
            &request.get_ref().backup_id,
        );
        let result = self
            .core
            .delete(&call.backup_id)
            .instrument(call.span())
            .await;
        let record = call.finish(result)?;
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
        let call = Call::new(
            "DownloadBackup",
            Action::Download,
            &request,
            &request.get_ref().backup_id,
        );
        let offset = request.get_ref().offset;
        // Read from byte 0 whatever the offset: the whole file is hashed
        // (the prefix is read but not sent) and checked against the record.
        let result = async {
            let record = self.core.downloadable(&call.backup_id).await?;
            if offset > record.size {
                return Err(crate::error::Error::invalid(format!(
                    "offset {offset} is past the end of the file ({} bytes)",
                    record.size
                )));
            }
            self.core.download(&call.backup_id, 0).await
        }
        .instrument(call.span())
        .await;
        let download = call.finish(result)?;
        let record = download.record;
        let meta = proto::DownloadBackupResponse {
            chunk: Default::default(),
            offset,
            filename: record.filename.clone(),
            size: record.size,
            sha256: record.sha256.clone(),
            content_type: record.content_type().into(),
        };
        // An empty remainder (offset == size) still sends the metadata message.
        if record.size == offset {
            return Ok(Response::new(Box::pin(futures::stream::once(async move {
                Ok(meta)
            }))));
        }
        let window = Window::verified_tail(
            offset,
            Expected {
                size: record.size,
                sha256: record.sha256.clone(),
            },
        );
        let mut first = Some(meta);
        let mut sent = offset;
        let chunks = checked(download.stream, window).map(move |chunk| {
            let chunk = chunk.map_err(|fault| match fault {
                Fault::Storage(e) => Status::from(e),
                Fault::DataLoss(message) => Status::data_loss(message),
            })?;
            let mut message = first.take().unwrap_or_default();
            message.offset = sent;
            sent += chunk.len() as u64;
            telemetry::downloaded(chunk.len() as u64);
            message.chunk = chunk;
            Ok(message)
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    type RestoreBackupStream = RestoreStream;

    async fn restore_backup(
        &self,
        request: Request<proto::RestoreBackupRequest>,
    ) -> Result<Response<Self::RestoreBackupStream>, Status> {
        let call = Call::new(
            "RestoreBackup",
            Action::Restore,
            &request,
            &request.get_ref().backup_id,
        );
        let req = request.into_inner();
        let options = RestoreOptions {
            target_url: Some(req.target_url).filter(|u| !u.is_empty()),
            dry_run: req.dry_run,
            skip_safety_backup: req.skip_safety_backup,
            documents_dir: Some(req.documents_dir).filter(|d| !d.is_empty()),
        };
        let (updates, mut progress) = tokio::sync::mpsc::channel(64);
        let core = self.core.clone();
        let id = call.backup_id.clone();
        let who = call.who.clone();
        let span = call.span();
        // The restore runs to commit or rollback even if the client goes away;
        // its outcome is metered and audited when it ends.
        let mut job = tokio::spawn(async move {
            let result = core
                .restore(&id, options, &who, updates)
                .instrument(span)
                .await;
            call.finish(result)
        });
        // Refusals before any progress (no maintenance mode, unknown id) fail the call itself.
        let first = tokio::select! {
            update = progress.recv() => update.map(Ok),
            result = &mut job => Some(Err(result)),
        };
        let first = match first {
            Some(Ok(update)) => Some(update),
            // The job ended first, or closed its progress channel on the way out.
            ended => {
                let result = match ended {
                    Some(Err(result)) => result,
                    _ => (&mut job).await,
                };
                let outcome = joined(result)?;
                let rest = tokio_stream::wrappers::ReceiverStream::new(progress)
                    .map(|u| Ok(convert::restore_progress(u)));
                let last = futures::stream::once(async move { Ok(final_message(outcome)) });
                return Ok(Response::new(Box::pin(rest.chain(last))));
            }
        };
        let head = futures::stream::iter(first.map(|u| Ok(convert::restore_progress(u))));
        let middle = tokio_stream::wrappers::ReceiverStream::new(progress)
            .map(|u| Ok(convert::restore_progress(u)));
        let tail = futures::stream::once(async move { joined(job.await).map(final_message) });
        Ok(Response::new(Box::pin(head.chain(middle).chain(tail))))
    }

    async fn verify_backup(
        &self,
        request: Request<proto::VerifyBackupRequest>,
    ) -> Result<Response<proto::VerifyBackupResponse>, Status> {
        let call = Call::new(
            "VerifyBackup",
            Action::Verify,
            &request,
            &request.get_ref().backup_id,
        );
        let scratch = Some(request.into_inner().scratch_database_url);
        let result = self
            .core
            .verify(&call.backup_id, scratch)
            .instrument(call.span())
            .await;
        Ok(Response::new(convert::verify(call.finish(result)?)))
    }

    async fn get_maintenance_mode(
        &self,
        request: Request<proto::GetMaintenanceModeRequest>,
    ) -> Result<Response<proto::MaintenanceMode>, Status> {
        let call = Call::new("GetMaintenanceMode", Action::Get, &request, "");
        let state = call.finish(Ok(self.core.maintenance().await))?;
        Ok(Response::new(convert::maintenance(state)))
    }

    async fn set_maintenance_mode(
        &self,
        request: Request<proto::SetMaintenanceModeRequest>,
    ) -> Result<Response<proto::MaintenanceMode>, Status> {
        let call = Call::new("SetMaintenanceMode", Action::Maintenance, &request, "");
        let req = request.into_inner();
        let result = self
            .core
            .set_maintenance(req.enabled, req.reason, &call.who)
            .instrument(call.span())
            .await;
        Ok(Response::new(convert::maintenance(call.finish(result)?)))
    }

    async fn prune_backups(
        &self,
        request: Request<proto::PruneBackupsRequest>,
    ) -> Result<Response<proto::PruneBackupsResponse>, Status> {
        let call = Call::new("PruneBackups", Action::Prune, &request, "");
        let dry_run = request.get_ref().dry_run;
        let result = self.core.prune(dry_run).instrument(call.span()).await;
        Ok(Response::new(convert::prune(call.finish(result)?)))
    }

    async fn get_schedule(
        &self,
        request: Request<proto::GetScheduleRequest>,
    ) -> Result<Response<proto::Schedule>, Status> {
        let call = Call::new("GetSchedule", Action::Get, &request, "");
        let result = self.core.schedule_status().instrument(call.span()).await;
        Ok(Response::new(convert::schedule(call.finish(result)?)))
    }
}

fn joined(
    result: std::result::Result<
        std::result::Result<RestoreOutcome, Status>,
        tokio::task::JoinError,
    >,
) -> std::result::Result<RestoreOutcome, Status> {
    result.map_err(|e| Status::internal(format!("restore task failed: {e}")))?
}

/// The last message of a restore: the phase it ended in and rows per table.
fn final_message(outcome: RestoreOutcome) -> proto::RestoreProgress {
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
    last.documents_written = outcome.documents_written;
    last.documents_dir = outcome.documents_dir.unwrap_or_default();
    last
}
