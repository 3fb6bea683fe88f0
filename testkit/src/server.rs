//! A fast S3 server in this process: s3s over a local directory, with TCP_NODELAY on accepted
//! sockets (without it every keep-alive request stalls ~40 ms on delayed ACKs).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// A running local S3 server.
pub struct LocalS3 {
    pub endpoint: String,
    pub root: PathBuf,
}

impl LocalS3 {
    /// The server shared by every test of this process, started on first use.
    pub fn shared() -> &'static LocalS3 {
        static SERVER: OnceLock<LocalS3> = OnceLock::new();
        SERVER.get_or_init(|| {
            let root =
                std::env::temp_dir().join(format!("s3bundler-testkit-{}", std::process::id()));
            remove_stale_roots();
            LocalS3::start(&root, 0)
                .unwrap_or_else(|e| panic!("cannot start the local S3 server: {e}"))
        })
    }

    /// Starts a server storing objects under `root` on `port` (0: any free port). It runs on
    /// its own thread and runtime, so it outlives any test's runtime.
    pub fn start(root: &Path, port: u16) -> std::io::Result<LocalS3> {
        std::fs::create_dir_all(root)?;
        let fs =
            s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(
            crate::ACCESS_KEY,
            crate::SECRET_KEY,
        ));
        let service = builder.build();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        std::thread::Builder::new()
            .name("local-s3".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("local S3 runtime: {e}"));
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let http = ConnBuilder::new(TokioExecutor::new());
                    loop {
                        let Ok((socket, _)) = listener.accept().await else {
                            continue;
                        };
                        let _ = socket.set_nodelay(true);
                        let connection = http
                            .serve_connection(TokioIo::new(socket), service.clone())
                            .into_owned();
                        tokio::spawn(async move {
                            let _ = connection.await;
                        });
                    }
                });
            })?;
        Ok(LocalS3 {
            endpoint: format!("http://{address}"),
            root: root.to_path_buf(),
        })
    }
}

impl LocalS3 {
    /// Stores an object by writing its file directly, bypassing HTTP: the fast way to fill a
    /// bucket with 100,000 objects. The server computes the ETag (MD5) when it serves the file.
    pub fn write_object_file(&self, bucket: &str, key: &str, body: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(&mut self.create_object_file(bucket, key)?, body)
    }

    /// Creates an object's file to be written directly, for objects too large to build in
    /// memory first.
    pub fn create_object_file(&self, bucket: &str, key: &str) -> std::io::Result<std::fs::File> {
        let path = self.root.join(bucket).join(key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::File::create(path)
    }
}

impl LocalS3 {
    /// Records an object's ETag (its MD5, hex) where the server keeps it, so that it is not
    /// computed over the whole file again at every GET and HEAD of a file written directly.
    pub fn record_etag(&self, bucket: &str, key: &str, md5: &str) -> std::io::Result<()> {
        let encode = |s: &str| base64_simd::URL_SAFE_NO_PAD.encode_to_string(s);
        let info = self.root.join(format!(
            ".bucket-{}.object-{}.internal.json",
            encode(bucket),
            encode(key)
        ));
        std::fs::write(info, serde_json::json!({ "e_tag": md5 }).to_string())
    }
}

/// Deletes data directories left by earlier test processes that have exited.
fn remove_stale_roots() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("s3bundler-testkit-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
