//! What redisha reads of an RDB file without loading it: the format version (the magic
//! `REDIS0010`), the auxiliary fields the engine wrote first (`redis-ver`, `valkey-ver`, ...)
//! and the key count of each database (the RESIZEDB record before its keys).

use std::collections::BTreeMap;
use std::io::Read;

/// What the start of an RDB file says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RdbHeader {
    pub version: u32,
    /// Auxiliary fields (`redis-ver`, `redis-bits`, `ctime`, `used-mem`, ...), as text.
    pub aux: BTreeMap<String, String>,
    /// Keys in the file (the sum of every database's RESIZEDB record); `None` when a record
    /// redisha does not parse comes before them (a module's or a function library's).
    pub keys: Option<u64>,
}

impl RdbHeader {
    /// The engine version that wrote the file, as its auxiliary fields name it.
    pub fn engine(&self) -> Option<crate::engine::Engine> {
        let (name, version) = match self.aux.get("valkey-ver") {
            Some(v) => ("valkey", v),
            None => ("redis", self.aux.get("redis-ver")?),
        };
        Some(crate::engine::Engine {
            name: name.into(),
            version: version.clone(),
        })
    }
}

const OP_AUX: u8 = 0xFA;
const OP_RESIZEDB: u8 = 0xFB;
const OP_SELECTDB: u8 = 0xFE;
const OP_EOF: u8 = 0xFF;

/// Reads the header of an RDB stream. Errors say what is wrong, for the message that names
/// the file.
pub fn read_header(mut input: impl Read) -> Result<RdbHeader, String> {
    let mut magic = [0u8; 9];
    input
        .read_exact(&mut magic)
        .map_err(|_| "shorter than an RDB header (9 bytes)".to_string())?;
    if &magic[..5] != b"REDIS" {
        return Err("does not start with the RDB magic \"REDIS\"".into());
    }
    let version: u32 = std::str::from_utf8(&magic[5..])
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("RDB version {:?} is not a number", &magic[5..]))?;
    let mut header = RdbHeader {
        version,
        ..Default::default()
    };
    let mut r = Reader { input };
    let mut keys: u64 = 0;
    let mut seen_db = false;
    while let Ok(op) = r.byte() {
        match op {
            OP_AUX => {
                let key = r.string()?;
                let value = r.string()?;
                header.aux.insert(
                    String::from_utf8_lossy(&key).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                );
            }
            OP_SELECTDB => {
                r.length()?;
                seen_db = true;
            }
            OP_RESIZEDB => {
                keys += r.length()?;
                r.length()?;
                // The keys follow; the next database (if any) would need them parsed.
                header.keys = Some(keys);
                break;
            }
            OP_EOF if !seen_db => {
                header.keys = Some(0);
                break;
            }
            _ => break,
        }
    }
    Ok(header)
}

struct Reader<R> {
    input: R,
}

impl<R: Read> Reader<R> {
    fn byte(&mut self) -> Result<u8, String> {
        let mut b = [0u8; 1];
        self.input
            .read_exact(&mut b)
            .map_err(|_| "ends inside its header".to_string())?;
        Ok(b[0])
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, String> {
        // Header fields are short; a huge length means a damaged file, not a big field.
        if n > 1 << 20 {
            return Err(format!("a header field claims {n} bytes"));
        }
        let mut buf = vec![0u8; n as usize];
        self.input
            .read_exact(&mut buf)
            .map_err(|_| "ends inside its header".to_string())?;
        Ok(buf)
    }

    /// A length, or the special encoding of a string (`Err` for the caller to handle).
    fn length_or_special(&mut self) -> Result<Result<u64, u8>, String> {
        let first = self.byte()?;
        Ok(match first >> 6 {
            0 => Ok(u64::from(first & 0x3F)),
            1 => Ok((u64::from(first & 0x3F) << 8) | u64::from(self.byte()?)),
            2 if first == 0x80 => {
                let b = self.bytes(4)?;
                Ok(u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
            }
            2 if first == 0x81 => {
                let b = self.bytes(8)?;
                Ok(u64::from_be_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ]))
            }
            2 => return Err(format!("unknown length encoding 0x{first:02x}")),
            _ => Err(first & 0x3F),
        })
    }

    fn length(&mut self) -> Result<u64, String> {
        self.length_or_special()?
            .map_err(|_| "a length is encoded as a string".to_string())
    }

    fn string(&mut self) -> Result<Vec<u8>, String> {
        match self.length_or_special()? {
            Ok(n) => self.bytes(n),
            Err(0) => Ok((self.byte()? as i8).to_string().into_bytes()),
            Err(1) => {
                let b = self.bytes(2)?;
                Ok(i16::from_le_bytes([b[0], b[1]]).to_string().into_bytes())
            }
            Err(2) => {
                let b = self.bytes(4)?;
                Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]])
                    .to_string()
                    .into_bytes())
            }
            Err(3) => {
                // LZF-compressed: not in the fields redisha reads; skipped whole.
                let compressed = self.length()?;
                self.length()?;
                self.bytes(compressed)?;
                Ok(Vec::new())
            }
            Err(e) => Err(format!("unknown string encoding {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aux(key: &str, value: &[u8]) -> Vec<u8> {
        let mut out = vec![OP_AUX, key.len() as u8];
        out.extend(key.as_bytes());
        out.extend(value);
        out
    }

    #[test]
    fn version_aux_fields_and_key_count_are_read() {
        let mut file = b"REDIS0010".to_vec();
        file.extend(aux("redis-ver", b"\x067.0.15"));
        // redis-bits as an 8-bit integer.
        file.extend(aux("redis-bits", &[0xC0, 64]));
        file.extend([OP_SELECTDB, 0, OP_RESIZEDB, 0x40, 0x10, 3]);
        let h = read_header(&file[..]).unwrap();
        assert_eq!(h.version, 10);
        assert_eq!(h.aux["redis-ver"], "7.0.15");
        assert_eq!(h.aux["redis-bits"], "64");
        assert_eq!(h.keys, Some(16));
        assert_eq!(h.engine().unwrap().to_string(), "Redis 7.0.15");
    }

    #[test]
    fn an_empty_dataset_has_no_keys_and_garbage_is_refused() {
        let mut file = b"REDIS0011".to_vec();
        file.extend(aux("valkey-ver", b"\x058.1.8"));
        file.push(OP_EOF);
        let h = read_header(&file[..]).unwrap();
        assert_eq!((h.version, h.keys), (11, Some(0)));
        assert_eq!(h.engine().unwrap().name, "valkey");
        assert!(read_header(&b"RUBBISH00"[..]).is_err());
        assert!(read_header(&b"REDIS"[..]).is_err());
    }
}
