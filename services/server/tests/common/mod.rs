//! A real quire server on 127.0.0.1:0 over the embedded stores and the real small models.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use quire_engine::{Engine, EngineConfig};
use quire_proto::v1 as pb;
use quire_proto::v1::ingest_service_client::IngestServiceClient;
use quire_proto::v1::query_service_client::QueryServiceClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server over `data_dir` with the small LLM.
    pub async fn start(data_dir: &Path) -> TestServer {
        Self::start_with(data_dir, |_| {}).await
    }

    /// Like [`start`](Self::start), with the configuration adjusted by `tweak`.
    pub async fn start_with(data_dir: &Path, tweak: impl FnOnce(&mut EngineConfig)) -> TestServer {
        Self::start_full(data_dir, tweak, None).await
    }

    /// Like [`start`](Self::start), requiring `api_key` on `quire.v1` calls.
    pub async fn start_with_key(data_dir: &Path, api_key: &str) -> TestServer {
        Self::start_full(data_dir, |_| {}, Some(api_key.to_string())).await
    }

    async fn start_full(
        data_dir: &Path,
        tweak: impl FnOnce(&mut EngineConfig),
        api_key: Option<String>,
    ) -> TestServer {
        let mut config = EngineConfig {
            data_dir: data_dir.to_path_buf(),
            llm: std::env::var("QUIRE_TEST_LLM").unwrap_or_else(|_| "smollm2-135m".into()),
            ..EngineConfig::default()
        };
        tweak(&mut config);
        let engine = Arc::new(Engine::open(config).await.expect("engine opens"));
        let (listener, addr) = quire_server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (tx, rx) = oneshot::channel();
        let served = engine.clone();
        let task = tokio::spawn(async move {
            let options = quire_server::ServeOptions {
                max_message_bytes: 80 << 20,
                api_key,
            };
            quire_server::serve(served, listener, options, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        TestServer {
            addr,
            engine,
            shutdown: Some(tx),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn ingest_client(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::connect(self.url()).await.unwrap()
    }

    pub async fn query_client(&self) -> QueryServiceClient<Channel> {
        QueryServiceClient::connect(self.url()).await.unwrap()
    }

    /// Stops serving and releases the stores, so the data directory can be reopened.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap();
        let engine = Arc::try_unwrap(self.engine)
            .ok()
            .expect("no other engine handles");
        drop(engine);
    }
}

pub fn doc(id: &str, media_type: &str, content: impl Into<Vec<u8>>) -> pb::IngestDocumentRequest {
    pb::IngestDocumentRequest {
        collection: "test".into(),
        document: Some(pb::Document {
            id: id.into(),
            media_type: media_type.into(),
            content: content.into(),
            title: String::new(),
            metadata: Default::default(),
        }),
    }
}

/// The documents listed in collection "test".
pub async fn list_test_documents(
    client: &mut IngestServiceClient<Channel>,
) -> Vec<pb::DocumentInfo> {
    client
        .list_documents(pb::ListDocumentsRequest {
            collection: "test".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .documents
}

pub async fn retrieve(client: &mut QueryServiceClient<Channel>, query: &str) -> Vec<pb::Hit> {
    client
        .retrieve(pb::RetrieveRequest {
            collection: "test".into(),
            query: query.into(),
            top_k: 5,
            filter: None,
            ..Default::default()
        })
        .await
        .expect("retrieve")
        .into_inner()
        .hits
}

/// Three documents on unrelated subjects: a PDF made with lopdf, Markdown and plain text.
pub fn corpus() -> Vec<pb::IngestDocumentRequest> {
    let pdf = quire_ingest::testing::pdf_with_pages(&[
        "Annual report of the Brindle Valley Beekeepers Association. The association keeps 140 hives \
         on the southern slopes of Brindle Valley.",
        "Honey harvest. In the last season the hives produced 2,300 kilograms of heather honey, \
         extracted in the cooperative's shed at Oakmere.",
        "Swarm control. Members inspect every colony weekly from April to July and remove queen \
         cells to prevent swarming.",
    ]);
    vec![
        doc("beekeeping.pdf", "application/pdf", pdf),
        doc(
            "volcano.md",
            "text/markdown",
            "# Mount Kessik\n\nMount Kessik is a stratovolcano on the island of Arnholm. \
             Its last eruption, in 1911, buried the village of Tarra under ash.\n\n\
             ## Monitoring\n\nSeismometers on the crater rim record every tremor, and the \
             observatory at Lunde publishes a daily report.\n",
        ),
        doc(
            "chess.txt",
            "text/plain",
            "The Halvard Open is a chess tournament played every March in the city of Voss. \
             The tournament uses a nine-round Swiss system, and the winner of the 2019 edition \
             was grandmaster Ilse Brenner, who scored seven and a half points.",
        ),
    ]
}

pub async fn ingest_corpus(client: &mut IngestServiceClient<Channel>) {
    for req in corpus() {
        let id = req.document.as_ref().unwrap().id.clone();
        let r = client
            .ingest_document(req)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"))
            .into_inner();
        assert_eq!(
            r.status,
            pb::document_result::Status::Created as i32,
            "{id}: {r:?}"
        );
        assert!(r.chunk_count >= 1, "{id}");
    }
}
