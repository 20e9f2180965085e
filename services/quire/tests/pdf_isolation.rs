//! `quire serve` reads PDFs in a child process with capped memory (`isolate_pdf`, on by
//! default): a small PDF built to need gigabytes fails alone with `memory_limit`, and the
//! server goes on ingesting and answering.

use std::time::Instant;

mod common;

use common::{Server, top_hit};
use quire_engine::pdf_worker::load_document;
use quire_proto::v1 as pb;
use quire_proto::v1::ingest_service_client::IngestServiceClient;

const COLLECTION: &str = "pdfs";

/// quire's binary as the PDF reader, `memory_limit` bytes for each parse.
fn reader(memory_limit: u64) -> quire_engine::pdf_worker::PdfWorker {
    quire_engine::pdf_worker::PdfWorker {
        program: env!("CARGO_BIN_EXE_quire").into(),
        memory_limit,
    }
}

/// A one-page PDF with an object stream that lists `n` objects, every one at offset 0: an
/// array of `m` zeros. lopdf parses each listed object, so the file (about 10·n + 2·m bytes)
/// asks for about n·m parsed values: 20,000 × 20,000 is 400 million, many gigabytes.
fn object_stream_bomb(n: usize, m: usize) -> Vec<u8> {
    let index: String = (0..n)
        .map(|i| format!("{} 0 ", 100 + i))
        .collect::<String>()
        + "\n";
    let content = format!("{index}[{}]\n", " 0".repeat(m));
    let page = "BT /F1 12 Tf 72 720 Td (Hello) Tj ET";
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_string(),
        format!("<< /Length {} >>\nstream\n{page}\nendstream", page.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
        format!(
            "<< /Type /ObjStm /N {n} /First {} /Length {} >>\nstream\n{content}\nendstream",
            index.len(),
            content.len()
        ),
    ];
    let mut out = String::from("%PDF-1.5\n");
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.push_str(&format!("{} 0 obj\n{o}\nendobj\n", i + 1));
    }
    let xref = out.len();
    out.push_str(&format!(
        "xref\n0 {}\n0000000000 65535 f \n",
        objects.len() + 1
    ));
    for off in offsets {
        out.push_str(&format!("{off:010} 00000 n \n"));
    }
    out.push_str(&format!(
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    ));
    out.into_bytes()
}

fn pdf_request(id: &str, content: Vec<u8>) -> pb::IngestDocumentRequest {
    pb::IngestDocumentRequest {
        collection: COLLECTION.into(),
        document: Some(pb::Document {
            id: id.into(),
            media_type: "application/pdf".into(),
            content,
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdf_that_needs_gigabytes_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &dir.path().join("log"));
    let mut ingest = IngestServiceClient::connect(server.url.clone())
        .await
        .unwrap();

    let bomb = object_stream_bomb(20_000, 20_000);
    assert!(bomb.len() < 300_000, "{} bytes", bomb.len());
    let started = Instant::now();
    let err = ingest
        .ingest_document(pdf_request("bomb.pdf", bomb))
        .await
        .expect_err("the bomb is rejected");
    println!(
        "bomb rejected in {:?}: {}",
        started.elapsed(),
        err.message()
    );
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("memory"), "{}", err.message());

    // The server is still there, and still reads PDFs.
    let pdf = quire_ingest::testing::pdf_with_pages(&[
        "The tide gauge at Varrow Point was installed in 1903.",
        "It records the sea level every six minutes.",
    ]);
    let r = ingest
        .ingest_document(pdf_request("gauge.pdf", pdf))
        .await
        .unwrap()
        .into_inner();
    assert!(r.chunk_count > 0, "{r:?}");
    let hit = top_hit(
        &server.url,
        COLLECTION,
        "How often is the sea level recorded?",
        pb::RetrievalMode::Unspecified,
    )
    .await
    .expect("a hit");
    assert_eq!(hit.document_id, "gauge.pdf");
    assert!(hit.text.contains("every six minutes"), "{hit:?}");
    assert_eq!(hit.page, 1, "{hit:?}");
}

/// `quire extract` reads PDFs in the same capped child process: the bomb is an error line,
/// not a machine out of memory.
#[test]
fn extract_reads_the_bomb_in_a_capped_child_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.pdf");
    std::fs::write(&path, object_stream_bomb(20_000, 20_000)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["extract", "--summary"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("error") && stdout.contains("memory"),
        "{stdout}"
    );
}

/// Every PDF of the hostile corpus (see `services/server/tests/hostile.rs`) reads the same in
/// the child process as in this one: the same text, pages and title, or the same error.
#[test]
fn the_child_reads_every_hostile_pdf_as_the_server_would() {
    let Ok(dir) = std::env::var("QUIRE_HOSTILE_PDFS") else {
        eprintln!(
            "SKIPPED: QUIRE_HOSTILE_PDFS is not set (deploy/hostile-pdfs.sh fetches the corpus)"
        );
        return;
    };
    let worker = reader(4 << 30);
    let limits = quire_ingest::Limits::default();
    let mut compared = 0;
    let mut documents = 0;
    for entry in walkdir::WalkDir::new(&dir).sort_by_file_name() {
        let entry = entry.unwrap();
        let is_pdf = entry
            .path()
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("pdf"));
        if !is_pdf {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        let read = |worker| {
            load_document(worker, &bytes, quire_ingest::MediaType::Pdf, None, &limits)
                .map_err(|e| e.to_string())
        };
        let (here, there) = (read(None), read(Some(&worker)));
        assert_eq!(there, here, "{}", entry.path().display());
        compared += 1;
        documents += usize::from(here.is_ok());
    }
    println!("{compared} PDFs read alike in both processes ({documents} with text)");
    assert!(
        compared >= 100,
        "expected the full corpus, found {compared} PDFs"
    );
}

/// Collects what a tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A PDF that lopdf has to repair still loads through the child, and the server logs the
/// repair as it would have logged it reading in-process.
#[test]
fn the_readers_warnings_reach_the_servers_log() {
    let mut pdf = quire_ingest::testing::pdf_with_pages(&[
        "A page whose cross-reference table points nowhere.",
    ]);
    let at = pdf
        .windows(9)
        .rposition(|w| w == b"startxref")
        .expect("the PDF ends with startxref");
    let digits = pdf[at + 10..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    pdf.splice(at + 10..at + 10 + digits, b"7".iter().copied());
    let worker = reader(4 << 30);
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let doc = tracing::subscriber::with_default(subscriber, || {
        worker.load(&pdf, &quire_ingest::Limits::default())
    })
    .unwrap();
    assert!(doc.text.contains("points nowhere"), "{:?}", doc.text);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("quire::pdf_reader") && logs.contains("cross-reference"),
        "{logs}"
    );
}

/// The reader's cap is the parse's share on top of what quire's binary maps at start, so a
/// tight cap still reads a PDF that needs a few MiB (the dev binary maps about 72 MiB before
/// it reads, more than this cap, and the CUDA build about 920 MiB).
#[test]
fn the_cap_counts_the_parse_not_the_binary() {
    let line = "A line of a long page read under a tight cap, with words enough to need memory. ";
    let page = line.repeat(2_000);
    let pages: Vec<&str> = std::iter::repeat_n(page.as_str(), 8).collect();
    let pdf = quire_ingest::testing::pdf_with_pages(&pages);
    let worker = reader(32 << 20);
    let doc = worker.load(&pdf, &quire_ingest::Limits::default()).unwrap();
    assert_eq!(doc.pages.len(), 8);
    assert!(doc.text.len() > 8 * 100_000, "{}", doc.text.len());
}
