//! A minimal RESP exchange with a node: "does it answer?". The driver needs only this;
//! everything else goes through the cluster crate.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ATTEMPT: Duration = Duration::from_secs(3);

fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn first_reply_line(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = vec![0u8; 256];
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() > 4096 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&got).trim_end().to_string())
}

/// Whether a Redis server answers PING at `address` (a NOAUTH answer counts: it is up, the
/// password is the cluster code's business). A LOADING answer does not count.
pub async fn answers(address: &str) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(address).await?;
        stream.write_all(&command(&["PING"])).await?;
        first_reply_line(&mut stream).await
    };
    match tokio::time::timeout(ATTEMPT, attempt).await {
        Ok(Ok(line)) => line.starts_with("+PONG") || line.starts_with("-NOAUTH"),
        _ => false,
    }
}

/// [`answers`], over TLS verified with `tls` when the nodes speak it (a node in TLS mode
/// answers nothing in plain text on its port).
pub async fn answers_with(address: &str, tls: Option<&redisha_cluster::tls::ClientTls>) -> bool {
    let Some(tls) = tls else {
        return answers(address).await;
    };
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let Ok(port) = port.parse::<u16>() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    redisha_cluster::conn::answers_ping(host, port, Some(tls), ATTEMPT).await
}
