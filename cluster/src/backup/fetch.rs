//! Fetching a node's snapshot over the replication protocol, as `redis-cli --rdb` does: the
//! node forks, writes a point-in-time RDB and streams it to us as to a new replica. It needs
//! nothing but the client port (and the password), so it works for every driver, and served
//! by a replica it costs its master nothing.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::conn::{Credential, Target};

use super::BackupError;

/// The size and SHA-256 (hex) of what was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub bytes: u64,
    pub sha256: String,
}

/// Writes `target`'s snapshot to `to`. `idle` bounds every wait for the node: its fork and
/// save may take a while, but it sends a newline every second meanwhile.
pub async fn fetch_rdb(
    target: &Target,
    credential: &Credential,
    to: &Path,
    idle: Duration,
) -> Result<Fetched, BackupError> {
    let fail = |problem: String| BackupError::Fetch {
        node: target.name.clone(),
        address: target.address(),
        problem,
    };
    let stream = tokio::time::timeout(idle, TcpStream::connect(target.address()))
        .await
        .map_err(|_| fail(format!("no connection within {idle:?}")))?
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let mut conn = BufReader::new(stream);
    if let Some(p) = &credential.password {
        send(&mut conn, &["AUTH", credential.user_name(), p.expose()])
            .await
            .map_err(&fail)?;
        let reply = line(&mut conn, idle).await.map_err(&fail)?;
        if !reply.starts_with('+') {
            // Redis does not echo the password in its refusal; the reply code is enough.
            let code = reply
                .split_whitespace()
                .next()
                .unwrap_or("-ERR")
                .to_string();
            return Err(fail(format!("the password was refused ({code})")));
        }
    }
    // Redis 7.0+: a snapshot only, no replication stream after it (older engines refuse the
    // option; the stream is then simply not read).
    send(&mut conn, &["REPLCONF", "rdb-only", "1"])
        .await
        .map_err(&fail)?;
    line(&mut conn, idle).await.map_err(&fail)?;
    send(&mut conn, &["SYNC"]).await.map_err(&fail)?;
    // Newlines keep the connection alive while the node saves; then `$<len>` or, for a
    // diskless transfer, `$EOF:<40-byte mark>` and the data up to the mark.
    let header = loop {
        let l = line(&mut conn, idle).await.map_err(&fail)?;
        if l.is_empty() {
            continue;
        }
        if let Some(rest) = l.strip_prefix('$') {
            break rest.to_string();
        }
        return Err(fail(format!("the node refused to send its snapshot: {l}")));
    };
    let file = tokio::fs::File::create(to)
        .await
        .map_err(|e| fail(format!("cannot write {}: {e}", to.display())))?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut hash = Sha256::new();
    let mut written: u64 = 0;
    let mut buf = vec![0u8; 1 << 16];
    if let Some(mark) = header.strip_prefix("EOF:") {
        let mark = mark.as_bytes().to_vec();
        // The last `mark.len()` bytes read may be the mark: hold them back until more come.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = read_some(&mut conn, &mut buf, idle).await.map_err(&fail)?;
            tail.extend_from_slice(&buf[..n]);
            if tail.ends_with(&mark) {
                tail.truncate(tail.len() - mark.len());
                hash.update(&tail);
                written += tail.len() as u64;
                out.write_all(&tail)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                break;
            }
            if tail.len() > mark.len() {
                let keep = tail.split_off(tail.len() - mark.len());
                hash.update(&tail);
                written += tail.len() as u64;
                out.write_all(&tail)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                tail = keep;
            }
        }
    } else {
        let total: u64 = header
            .trim()
            .parse()
            .map_err(|_| fail(format!("unexpected snapshot header ${header}")))?;
        while written < total {
            let want = usize::try_from(total - written)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = read_some(&mut conn, &mut buf[..want], idle)
                .await
                .map_err(&fail)?;
            hash.update(&buf[..n]);
            out.write_all(&buf[..n])
                .await
                .map_err(|e| fail(e.to_string()))?;
            written += n as u64;
        }
    }
    out.flush().await.map_err(|e| fail(e.to_string()))?;
    out.get_mut()
        .sync_all()
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(Fetched {
        bytes: written,
        sha256: hex(&hash.finalize()),
    })
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn send(conn: &mut BufReader<TcpStream>, args: &[&str]) -> Result<(), String> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).as_bytes());
        out.extend(a.as_bytes());
        out.extend(b"\r\n");
    }
    conn.get_mut()
        .write_all(&out)
        .await
        .map_err(|e| format!("cannot send: {e}"))
}

/// One reply line without its line end ("" for a bare keep-alive newline).
async fn line(conn: &mut BufReader<TcpStream>, idle: Duration) -> Result<String, String> {
    let mut raw = Vec::new();
    let n = tokio::time::timeout(idle, conn.read_until(b'\n', &mut raw))
        .await
        .map_err(|_| format!("no reply within {idle:?}"))?
        .map_err(|e| format!("connection failed: {e}"))?;
    if n == 0 {
        return Err("the node closed the connection".into());
    }
    Ok(String::from_utf8_lossy(&raw)
        .trim_end_matches(['\r', '\n'])
        .to_string())
}

async fn read_some(
    conn: &mut BufReader<TcpStream>,
    buf: &mut [u8],
    idle: Duration,
) -> Result<usize, String> {
    let n = tokio::time::timeout(idle, conn.read(buf))
        .await
        .map_err(|_| format!("the transfer stalled for {idle:?}"))?
        .map_err(|e| format!("connection failed: {e}"))?;
    if n == 0 {
        return Err("the node closed the connection before the snapshot ended".into());
    }
    Ok(n)
}
