//! A small HTTP server on a thread of its own, for the test stand-ins (the fault proxy, the ECS
//! agent): every request is answered by one async function.

use std::convert::Infallible;
use std::future::Future;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Binds 127.0.0.1 on a free port and answers each request with `answer` from a thread named
/// `name`; returns the bound address. Sockets are TCP_NODELAY: without it every keep-alive
/// request stalls ~40 ms.
pub fn serve<A, F, B>(name: &str, answer: A) -> std::io::Result<std::net::SocketAddr>
where
    A: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let thread = name.to_string();
    std::thread::Builder::new()
        .name(thread.clone())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("{thread} runtime: {e}"));
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).unwrap_or_else(|e| panic!("{e}"));
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = socket.set_nodelay(true);
                    let answer = answer.clone();
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let response = answer(request);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    tokio::spawn(async move {
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(socket), service)
                            .await;
                    });
                }
            });
        })?;
    Ok(address)
}
