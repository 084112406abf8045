//! go-plugin's side of the process: magic cookie, unix socket, optional AutoMTLS, the
//! handshake line, the controller (Shutdown), the stdio stream and the health service.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use crate::tfplugin::framework::{Identity, Registry};
use crate::tfplugin::proto::plugin as gp;
use crate::tfplugin::proto::tfplugin6::provider_server::ProviderServer;
use crate::tfplugin::server::ProviderService;
use crate::tfplugin::tls::{AutoMtls, TlsError};

pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// Terraform accepts messages up to 2^31 bytes; tonic's default is 4 MiB.
const MAX_MESSAGE: usize = i32::MAX as usize;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("Terraform offered plugin protocol versions {0:?}; this provider speaks only 6")]
    ProtocolVersion(String),
    #[error("creating the plugin socket: {0}")]
    Socket(std::io::Error),
    #[error("writing the handshake: {0}")]
    Stdout(std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The message someone running the binary by hand sees.
pub fn not_a_plugin_message(identity: &Identity) -> String {
    format!(
        "This binary is a plugin for Terraform ({}, {}).\n\
         It is not meant to be run directly: Terraform starts it. To use it, point a Terraform\n\
         CLI config (dev_overrides or a filesystem_mirror) at it and run `terraform plan`.\n\
         To debug it, run it with --debug and set the TF_REATTACH_PROVIDERS value it prints.",
        identity.label(),
        identity.address
    )
}

/// A connection: plaintext h2c (no client cert, or --debug) or TLS.
enum Conn {
    Plain(UnixStream),
    Tls(Box<TlsStream<UnixStream>>),
}

impl Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections, doing each TLS handshake in its own task so one slow client does
/// not hold up the others.
fn incoming(
    listener: UnixListener,
    tls: Option<TlsAcceptor>,
) -> tokio_stream::wrappers::ReceiverStream<Result<Conn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let tx = tx.clone();
            match &tls {
                None => {
                    if tx.send(Ok(Conn::Plain(stream))).await.is_err() {
                        return;
                    }
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        match acceptor.accept(stream).await {
                            Ok(s) => {
                                let _ = tx.send(Ok(Conn::Tls(Box::new(s)))).await;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "TLS handshake with Terraform failed")
                            }
                        }
                    });
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// go-plugin's controller: Terraform calls Shutdown when it is done with the provider.
struct Controller {
    shutdown: watch::Sender<bool>,
}

#[tonic::async_trait]
impl gp::grpc_controller_server::GrpcController for Controller {
    async fn shutdown(&self, _req: Request<gp::Empty>) -> Result<Response<gp::Empty>, Status> {
        tracing::debug!("Shutdown received");
        self.shutdown.send_replace(true);
        Ok(Response::new(gp::Empty {}))
    }
}

/// go-plugin's stdio forwarding. We never write to stdout/stderr through it (logs go to
/// stderr directly), so the stream only stays open until shutdown.
struct Stdio {
    shutdown: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl gp::grpc_stdio_server::GrpcStdio for Stdio {
    type StreamStdioStream =
        Pin<Box<dyn futures::Stream<Item = Result<gp::StdioData, Status>> + Send>>;

    async fn stream_stdio(
        &self,
        _req: Request<gp::Empty>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        let mut rx = self.shutdown.clone();
        let ended = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let stream = futures::stream::once(ended).filter_map(|()| async { None });
        Ok(Response::new(Box::pin(stream)))
    }
}

use futures::StreamExt;

fn socket_dir(identity: &Identity) -> Result<tempfile::TempDir, PluginError> {
    // go-plugin honours PLUGIN_UNIX_SOCKET_DIR; default to the system temp dir.
    let base = std::env::var_os("PLUGIN_UNIX_SOCKET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix(&format!("{}-plugin", identity.name))
        .tempdir_in(base)
        .map_err(PluginError::Socket)
}

async fn serve_on(
    registry: Registry,
    socket_dir: PathBuf,
    listener: UnixListener,
    tls: Option<TlsAcceptor>,
    shutdown_tx: watch::Sender<bool>,
) -> Result<(), PluginError> {
    let (mut health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("plugin", tonic_health::ServingStatus::Serving)
        .await;

    let provider = ProviderServer::new(ProviderService::new(registry))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let controller = gp::grpc_controller_server::GrpcControllerServer::new(Controller {
        shutdown: shutdown_tx.clone(),
    });
    let stdio = gp::grpc_stdio_server::GrpcStdioServer::new(Stdio {
        shutdown: shutdown_tx.subscribe(),
    });

    let mut rx = shutdown_tx.subscribe();
    let signal = async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Terraform kills us 2 s after Shutdown anyway; do not let a stuck stream keep us alive.
    let mut rx2 = shutdown_tx.subscribe();
    tokio::spawn(async move {
        let _ = rx2.wait_for(|s| *s).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tracing::debug!("forcing exit after shutdown");
        let _ = std::fs::remove_dir_all(&socket_dir);
        std::process::exit(0);
    });

    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(controller)
        .add_service(stdio)
        .add_service(provider)
        .serve_with_incoming_shutdown(incoming(listener, tls), signal)
        .await?;
    Ok(())
}

/// Keeps SIGINT from killing us: Terraform's process group gets Ctrl-C too, and Terraform
/// itself tells us to stop (StopProvider) and then to shut down.
fn ignore_sigint(shutdown: Option<watch::Sender<bool>>) {
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            match &shutdown {
                Some(tx) => {
                    tx.send_replace(true);
                }
                None => tracing::debug!("SIGINT ignored: waiting for Terraform to stop us"),
            }
        }
    });
}

/// Serves as a plugin started by Terraform (cookie already checked).
pub async fn serve_plugin(registry: Registry) -> Result<(), PluginError> {
    let versions = std::env::var("PLUGIN_PROTOCOL_VERSIONS").unwrap_or_else(|_| "6".into());
    if !versions.split(',').any(|v| v.trim() == "6") {
        return Err(PluginError::ProtocolVersion(versions));
    }
    ignore_sigint(None);

    let dir = socket_dir(&registry.identity)?;
    let path = dir.path().join("plugin.sock");
    let listener = UnixListener::bind(&path).map_err(PluginError::Socket)?;

    let (tls, cert_b64) = match std::env::var("PLUGIN_CLIENT_CERT") {
        Ok(pem) if !pem.trim().is_empty() => {
            let mtls = AutoMtls::new(&pem, registry.identity.name)?;
            let b64 =
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(&mtls.server_cert_der);
            (Some(TlsAcceptor::from(mtls.config)), b64)
        }
        _ => (None, String::new()),
    };

    write_stdout(&format!("1|6|unix|{}|grpc|{cert_b64}\n", path.display()))?;
    tracing::debug!(socket = %path.display(), tls = tls.is_some(), "plugin serving");

    let (shutdown_tx, _) = watch::channel(false);
    let result = serve_on(
        registry,
        dir.path().to_path_buf(),
        listener,
        tls,
        shutdown_tx,
    )
    .await;
    drop(dir);
    result
}

/// `--debug`: serve standalone (plaintext, as reattach requires) and print the
/// TF_REATTACH_PROVIDERS value; Ctrl-C stops it.
pub async fn serve_debug(registry: Registry) -> Result<(), PluginError> {
    let dir = socket_dir(&registry.identity)?;
    let path = dir.path().join("plugin.sock");
    let listener = UnixListener::bind(&path).map_err(PluginError::Socket)?;
    let (shutdown_tx, _) = watch::channel(false);
    ignore_sigint(Some(shutdown_tx.clone()));
    let value = reattach_value(registry.identity.address, &path, std::process::id());
    write_stdout(&format!(
        "Provider started. To attach Terraform CLI, set the TF_REATTACH_PROVIDERS environment variable with the following:\n\n\tTF_REATTACH_PROVIDERS='{value}'\n\nPress Ctrl-C to stop.\n"
    ))?;
    let result = serve_on(
        registry,
        dir.path().to_path_buf(),
        listener,
        None,
        shutdown_tx,
    )
    .await;
    drop(dir);
    result
}

pub fn reattach_value(address: &str, socket: &Path, pid: u32) -> String {
    serde_json::json!({
        address: {
            "Protocol": "grpc",
            "ProtocolVersion": 6,
            "Pid": pid,
            "Test": true,
            "Addr": {"Network": "unix", "String": socket.display().to_string()}
        }
    })
    .to_string()
}

fn write_stdout(text: &str) -> Result<(), PluginError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .map_err(PluginError::Stdout)?;
    out.flush().map_err(PluginError::Stdout)
}
