//! quire's gRPC transport: thin tonic handlers over [`quire_engine::Engine`].
//!
//! Handlers decode a request, call the engine, and map the result; all behaviour lives in the
//! engine. One port serves `quire.v1.IngestService`, `quire.v1.QueryService`, gRPC health and
//! server reflection.

mod convert;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use quire_engine::{AskQuery, Engine, IncomingDocument, RetrieveQuery};
use quire_proto::v1 as pb;
use quire_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use quire_proto::v1::query_service_server::{QueryService, QueryServiceServer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

pub use convert::status;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building the reflection service failed.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Binding or reading the listening socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// How [`serve`] runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Largest decoded request message; set it above the largest accepted document.
    pub max_message_bytes: usize,
    /// When set, `quire.v1` calls must carry `authorization: Bearer <key>`; others get
    /// `UNAUTHENTICATED`. Health and reflection stay open, for probes and tools.
    pub api_key: Option<String>,
}

/// Checks the bearer token of every call to the services it wraps.
#[derive(Clone)]
struct RequireKey(Option<Arc<[u8]>>);

impl tonic::service::Interceptor for RequireKey {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(key) = &self.0 else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(token) if same_bytes(token.as_bytes(), key) => Ok(request),
            Some(_) => Err(Status::unauthenticated("the API key is not valid")),
            None => Err(Status::unauthenticated(
                "this server needs an API key: send the metadata `authorization: Bearer <key>`",
            )),
        }
    }
}

/// Byte equality whose time does not depend on where the inputs differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves every quire service on `listener` until `shutdown` resolves.
///
/// In-flight requests finish before this returns.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<IngestServiceServer<IngestApi>>().await;
    health.set_serving::<QueryServiceServer<QueryApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(quire_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let auth = RequireKey(
        options
            .api_key
            .filter(|k| !k.is_empty())
            .map(|k| Arc::from(k.into_bytes())),
    );
    let ingest = tonic::service::interceptor::InterceptedService::new(
        IngestServiceServer::new(IngestApi {
            engine: engine.clone(),
        })
        .max_decoding_message_size(options.max_message_bytes),
        auth.clone(),
    );
    let query = tonic::service::interceptor::InterceptedService::new(
        QueryServiceServer::new(QueryApi { engine }),
        auth,
    );
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ingest)
        .add_service(query)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// Binds `addr`; port 0 picks a free port. Returns the listener and the address bound.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// `quire.v1.IngestService` over the engine.
pub struct IngestApi {
    engine: Arc<Engine>,
}

fn incoming(doc: Option<pb::Document>) -> quire_engine::Result<IncomingDocument> {
    let doc = doc.unwrap_or_default();
    Ok(IncomingDocument {
        metadata: convert::metadata_from_pb(doc.metadata)?,
        id: doc.id,
        media_type: doc.media_type,
        content: doc.content,
        title: Some(doc.title).filter(|t| !t.is_empty()),
    })
}

/// Runs one ingest request; returns the document id, the server-side milliseconds and the outcome.
async fn run_ingest(
    engine: &Engine,
    req: pb::IngestDocumentRequest,
) -> (
    String,
    u64,
    quire_engine::Result<quire_engine::IngestOutcome>,
) {
    let started = Instant::now();
    let id = req
        .document
        .as_ref()
        .map(|d| d.id.clone())
        .unwrap_or_default();
    let result = match incoming(req.document) {
        Ok(doc) => engine.ingest(&req.collection, doc).await,
        Err(e) => Err(e),
    };
    (id, started.elapsed().as_millis() as u64, result)
}

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn create_collection(
        &self,
        request: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::Collection>, Status> {
        let info = self
            .engine
            .create_collection(&request.into_inner().name)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(convert::collection(info)))
    }

    async fn list_collections(
        &self,
        _request: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let list = self
            .engine
            .list_collections()
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::ListCollectionsResponse {
            collections: list.into_iter().map(convert::collection).collect(),
        }))
    }

    async fn delete_collection(
        &self,
        request: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        self.engine
            .delete_collection(&request.into_inner().name)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::DeleteCollectionResponse {}))
    }

    async fn optimize_collection(
        &self,
        request: Request<pb::OptimizeCollectionRequest>,
    ) -> Result<Response<pb::OptimizeCollectionResponse>, Status> {
        let started = Instant::now();
        self.engine
            .optimize_collection(&request.into_inner().name)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::OptimizeCollectionResponse {
            took_ms: started.elapsed().as_millis() as u64,
        }))
    }

    async fn ingest_document(
        &self,
        request: Request<pb::IngestDocumentRequest>,
    ) -> Result<Response<pb::DocumentResult>, Status> {
        let (id, took_ms, result) = run_ingest(&self.engine, request.into_inner()).await;
        let outcome = result.map_err(|e| status(&e))?;
        Ok(Response::new(convert::document_result(
            id,
            0,
            took_ms,
            Ok(outcome),
        )))
    }

    type IngestStreamStream = EventStream<pb::DocumentResult>;

    async fn ingest_stream(
        &self,
        request: Request<Streaming<pb::IngestDocumentRequest>>,
    ) -> Result<Response<Self::IngestStreamStream>, Status> {
        let engine = self.engine.clone();
        let workers = engine.config().ingest_workers.max(1);
        let results = request
            .into_inner()
            .enumerate()
            .map(move |(sequence, item)| {
                let engine = engine.clone();
                async move {
                    match item {
                        Ok(req) => {
                            let (id, took_ms, result) = run_ingest(&engine, req).await;
                            Ok(convert::document_result(
                                id,
                                sequence as u64,
                                took_ms,
                                result,
                            ))
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            // Documents overlap up to `workers` at a time; results keep request order.
            .buffered(workers);
        Ok(Response::new(Box::pin(results)))
    }

    async fn delete_documents(
        &self,
        request: Request<pb::DeleteDocumentsRequest>,
    ) -> Result<Response<pb::DeleteDocumentsResponse>, Status> {
        let req = request.into_inner();
        let out = self
            .engine
            .delete_documents(&req.collection, &req.document_ids)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::DeleteDocumentsResponse {
            deleted: out.deleted,
            not_found: out.not_found,
        }))
    }

    async fn list_documents(
        &self,
        request: Request<pb::ListDocumentsRequest>,
    ) -> Result<Response<pb::ListDocumentsResponse>, Status> {
        let docs = self
            .engine
            .list_documents(&request.into_inner().collection)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::ListDocumentsResponse {
            documents: docs.into_iter().map(convert::document).collect(),
        }))
    }
}

/// `quire.v1.QueryService` over the engine.
pub struct QueryApi {
    engine: Arc<Engine>,
}

fn ask_query(req: pb::AskRequest) -> Result<AskQuery, Status> {
    let generation = req.generation.unwrap_or_default();
    Ok(AskQuery {
        collection: req.collection,
        question: req.question,
        top_k: req.top_k as usize,
        filter: convert::filter(req.filter).map_err(|e| status(&e))?,
        max_tokens: generation.max_tokens.map(|t| t as usize),
        temperature: generation.temperature.map(f64::from),
        top_p: generation.top_p.map(f64::from),
        seed: generation.seed,
    })
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn retrieve(
        &self,
        request: Request<pb::RetrieveRequest>,
    ) -> Result<Response<pb::RetrieveResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let query = RetrieveQuery {
            collection: req.collection,
            query: req.query,
            top_k: req.top_k as usize,
            filter: convert::filter(req.filter).map_err(|e| status(&e))?,
            mode: convert::retrieval_mode(req.mode).map_err(|e| status(&e))?,
            rrf_k: req.fusion.map(|f| f.rrf_k),
            dense_weight: req.fusion.and_then(|f| f.dense_weight),
            rerank_depth: req.rerank_depth.map(|d| d as usize),
        };
        let hits = self.engine.retrieve(&query).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::RetrieveResponse {
            hits: hits.into_iter().map(convert::hit).collect(),
            took_ms: started.elapsed().as_millis() as u64,
        }))
    }

    async fn ask(
        &self,
        request: Request<pb::AskRequest>,
    ) -> Result<Response<pb::AskResponse>, Status> {
        let query = ask_query(request.into_inner())?;
        // Dropped with this future when the client cancels or its deadline passes, which
        // stops generation (the deltas themselves are not used).
        let (alive, _watch) = mpsc::unbounded_channel::<String>();
        let answer = self
            .engine
            .ask(&query, Some(alive))
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(convert::answer(answer)))
    }

    type AskStreamStream = EventStream<pb::AskStreamEvent>;

    async fn ask_stream(
        &self,
        request: Request<pb::AskRequest>,
    ) -> Result<Response<Self::AskStreamStream>, Status> {
        use pb::ask_stream_event::Event;
        let query = ask_query(request.into_inner())?;
        let engine = self.engine.clone();
        let (out_tx, out_rx) = mpsc::channel(64);
        tokio::spawn(async move {
            // Unbounded, so generation never waits for this client (it holds the model);
            // at most `max_tokens` deltas can queue.
            let (delta_tx, mut delta_rx) = mpsc::unbounded_channel::<String>();
            let ask = tokio::spawn(async move { engine.ask(&query, Some(delta_tx)).await });
            while let Some(delta) = delta_rx.recv().await {
                let event = pb::AskStreamEvent {
                    event: Some(Event::Delta(delta)),
                };
                if out_tx.send(Ok(event)).await.is_err() {
                    // The client went away: dropping the receiver stops generation.
                    break;
                }
            }
            drop(delta_rx);
            let last = match ask.await {
                Ok(Ok(answer)) => Ok(pb::AskStreamEvent {
                    event: Some(Event::Final(convert::answer(answer))),
                }),
                Ok(Err(e)) => Err(status(&e)),
                Err(e) => Err(Status::internal(format!("ask task failed: {e}"))),
            };
            let _ = out_tx.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}
