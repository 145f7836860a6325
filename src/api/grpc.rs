//! The gRPC adapter: BackupService over the core, the auth interceptor,
//! health and reflection.

use std::sync::Arc;

use futures::StreamExt;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::auth::Authenticator;
use super::convert;
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
}
