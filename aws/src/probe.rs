//! Minimal RESP exchanges with a node: "does it answer?" and "shut down". The driver only
//! needs these two; everything else goes through the cluster crate.

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

/// Asks the node to shut down (saving if it persists). Returns false if nothing answered.
pub async fn shutdown(address: &str, password: Option<&str>) -> std::io::Result<bool> {
    let attempt = async {
        // An address with no instance behind it (a terminated host) usually drops packets
        // rather than refusing: give up on the connect quickly and report "nothing answered".
        let mut stream =
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address)).await {
                Ok(Ok(s)) => s,
                _ => return Ok(false),
            };
        if let Some(password) = password {
            stream.write_all(&command(&["AUTH", password])).await?;
            let line = first_reply_line(&mut stream).await?;
            if !line.starts_with("+OK") {
                return Err(std::io::Error::other(
                    "the node refused the cluster password",
                ));
            }
        }
        stream.write_all(&command(&["SHUTDOWN"])).await?;
        // A successful SHUTDOWN closes the connection without a reply.
        let line = first_reply_line(&mut stream).await.unwrap_or_default();
        if line.starts_with('-') {
            return Err(std::io::Error::other(format!("SHUTDOWN refused: {line}")));
        }
        Ok(true)
    };
    tokio::time::timeout(Duration::from_secs(30), attempt)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("SHUTDOWN did not finish in 30 s")))
}
