//! Loading: media types, text decoding, limits, HTML and Markdown extraction.

use std::path::Path;

use quire_ingest::{Error, Limits, MediaType, TextEncoding, load};

fn load_default(bytes: &[u8], media: MediaType) -> Result<quire_ingest::Document, Error> {
    load(bytes, media, &Limits::default())
}

#[test]
fn media_types_parse_from_mime_short_name_and_path() {
    let cases = [
        ("text/plain", MediaType::PlainText),
        ("Text/Plain; charset=utf-8", MediaType::PlainText),
        ("text/markdown", MediaType::Markdown),
        ("text/x-markdown", MediaType::Markdown),
        ("TEXT/HTML;charset=UTF-8", MediaType::Html),
        ("application/pdf", MediaType::Pdf),
        ("text", MediaType::PlainText),
        ("markdown", MediaType::Markdown),
        ("md", MediaType::Markdown),
        ("html", MediaType::Html),
        ("pdf", MediaType::Pdf),
    ];
    for (s, want) in cases {
        assert_eq!(s.parse::<MediaType>().unwrap(), want, "{s}");
    }
    for m in [
        MediaType::PlainText,
        MediaType::Markdown,
        MediaType::Html,
        MediaType::Pdf,
    ] {
        assert_eq!(m.as_mime().parse::<MediaType>().unwrap(), m);
    }
    assert_eq!(
        "image/png".parse::<MediaType>(),
        Err(Error::UnsupportedMediaType("image/png".to_owned()))
    );
    assert!(matches!(
        "".parse::<MediaType>(),
        Err(Error::UnsupportedMediaType(_))
    ));

    assert_eq!(
        MediaType::from_path(Path::new("a/b.MD")),
        Some(MediaType::Markdown)
    );
    assert_eq!(
        MediaType::from_path(Path::new("x.htm")),
        Some(MediaType::Html)
    );
    assert_eq!(
        MediaType::from_path(Path::new("x.txt")),
        Some(MediaType::PlainText)
    );
    assert_eq!(
        MediaType::from_path(Path::new("x.pdf")),
        Some(MediaType::Pdf)
    );
    assert_eq!(MediaType::from_path(Path::new("x.docx")), None);
    assert_eq!(MediaType::from_path(Path::new("README")), None);
}

#[test]
fn plain_text_is_kept_and_bom_stripped() {
    let doc = load_default("\u{feff}héllo\r\nworld".as_bytes(), MediaType::PlainText).unwrap();
    assert_eq!(doc.text, "héllo\r\nworld");
    assert!(doc.pages.is_empty());
    assert_eq!(doc.page_at(0), None);
}

#[test]
fn text_that_is_not_utf8_is_read_as_latin1_and_says_so() {
    let bytes = b"na\xefve caf\xe9 \x93quoted\x94";
    for media in [MediaType::PlainText, MediaType::Markdown, MediaType::Html] {
        let doc = load_default(bytes, media).unwrap();
        assert_eq!(doc.text.trim(), "naïve café “quoted”", "{media}");
        assert_eq!(doc.encoding, Some(TextEncoding::Latin1), "{media}");
    }
    let doc = load_default("naïve".as_bytes(), MediaType::PlainText).unwrap();
    assert_eq!(doc.encoding, Some(TextEncoding::Utf8));
}

#[test]
fn utf8_text_with_a_broken_byte_is_an_error_not_latin1() {
    // UTF-8 with one stray byte after "Grüße".
    let mut bytes = "Grüße".as_bytes().to_vec();
    let at = bytes.len();
    bytes.push(0xFF);
    bytes.extend(" aus Köln, schöne Tage in Düsseldorf".as_bytes());
    for media in [MediaType::PlainText, MediaType::Markdown, MediaType::Html] {
        match load_default(&bytes, media) {
            Err(Error::InvalidEncoding {
                encoding, offset, ..
            }) => assert_eq!((encoding, offset), ("utf-8", at), "{media}"),
            other => panic!("{media}: expected invalid_encoding, got {other:?}"),
        }
    }
    // Latin-1 text in which two bytes happen to form a UTF-8 character ("Ã©" is c3 a9) is
    // still Latin-1: its other accented letters are not UTF-8.
    let latin = b"caf\xe9 cr\xe8me, \xc3\xa9t\xe9 \xe0 Orl\xe9ans";
    let doc = load_default(latin, MediaType::PlainText).unwrap();
    assert_eq!(doc.encoding, Some(TextEncoding::Latin1));
    assert_eq!(doc.text, "café crème, Ã©té à Orléans");
    // So is a short Windows-1252 line whose "ß“" happens to be valid UTF-8.
    let doc = load_default(b"Titel: \x84Ma\xdf\x93", MediaType::PlainText).unwrap();
    assert_eq!(doc.encoding, Some(TextEncoding::Latin1));
    assert_eq!(doc.text, "Titel: „Maß“");
}

#[test]
fn a_declared_charset_is_followed_and_a_wrong_one_is_an_error() {
    use quire_ingest::{charset_param, load_declared};
    let limits = Limits::default();
    // "Привет, мир" in windows-1251 and in KOI8-R.
    let cp1251 = b"\xcf\xf0\xe8\xe2\xe5\xf2, \xec\xe8\xf0";
    let koi8 = b"\xf0\xd2\xc9\xd7\xc5\xd4, \xcd\xc9\xd2";

    // From the media type, for any text type.
    assert_eq!(
        charset_param("text/html; charset=\"windows-1251\""),
        Some("windows-1251")
    );
    assert_eq!(charset_param("text/plain"), None);
    for media in [MediaType::PlainText, MediaType::Markdown, MediaType::Html] {
        let doc = load_declared(cp1251, media, Some("windows-1251"), &limits).unwrap();
        assert_eq!(doc.text.trim(), "Привет, мир", "{media}");
        assert_eq!(doc.encoding.map(|e| e.label()), Some("windows-1251"));
    }

    // From an HTML <meta>, in either form, when the bytes are not UTF-8.
    let mut page = b"<html><head><meta charset=\"windows-1251\"></head><body><p>".to_vec();
    page.extend_from_slice(cp1251);
    page.extend_from_slice(b"</p></body></html>");
    let doc = load_default(&page, MediaType::Html).unwrap();
    assert_eq!(doc.text.trim(), "Привет, мир");
    let mut page =
        b"<META HTTP-EQUIV=\"Content-Type\" CONTENT=\"text/html; charset=KOI8-R\"><p>".to_vec();
    page.extend_from_slice(koi8);
    let doc = load_default(&page, MediaType::Html).unwrap();
    assert_eq!(doc.text.trim(), "Привет, мир");
    assert_eq!(doc.encoding.map(|e| e.label()), Some("KOI8-R"));
    // A page that is valid UTF-8 stays UTF-8 whatever its <meta> says.
    let doc = load_default(
        "<meta charset=\"iso-8859-1\"><p>Grüße</p>".as_bytes(),
        MediaType::Html,
    )
    .unwrap();
    assert_eq!(doc.text.trim(), "Grüße");
    assert_eq!(doc.encoding, Some(TextEncoding::Utf8));

    // As browsers do, a <meta> naming UTF-16 means UTF-8, and an unknown one is ignored; a
    // page whose bytes break its own <meta> is read as if it had none (here Latin-1).
    let doc = load_default(b"<meta charset=\"utf-16\"><p>caf\xe9</p>", MediaType::Html).unwrap();
    assert_eq!(doc.text.trim(), "café");
    assert_eq!(doc.encoding, Some(TextEncoding::Latin1));
    let doc = load_default(b"<meta charset=\"{{enc}}\"><p>caf\xe9</p>", MediaType::Html).unwrap();
    assert_eq!(doc.text.trim(), "café");
    assert_eq!(doc.encoding, Some(TextEncoding::Latin1));

    // A byte-order mark outranks the declaration.
    let doc = load_declared(
        "\u{feff}Grüße".as_bytes(),
        MediaType::PlainText,
        Some("koi8-r"),
        &limits,
    )
    .unwrap();
    assert_eq!(doc.text, "Grüße");

    // Bytes that are not valid in the declared charset, or an unknown charset: errors.
    let err = load_declared(
        b"caf\xc3\xa9 \xff",
        MediaType::PlainText,
        Some("utf-8"),
        &limits,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::InvalidEncoding { offset: 6, .. }),
        "{err:?}"
    );
    let err = load_declared(
        b"text",
        MediaType::PlainText,
        Some("x-no-such-charset"),
        &limits,
    )
    .unwrap_err();
    assert!(err.to_string().contains("x-no-such-charset"), "{err}");
}

#[test]
fn utf16_with_a_bom_is_decoded_and_broken_utf16_is_an_error() {
    let mut le = vec![0xFF, 0xFE];
    le.extend(
        "# Grüße\n\nHallo Welt"
            .encode_utf16()
            .flat_map(u16::to_le_bytes),
    );
    let doc = load_default(&le, MediaType::Markdown).unwrap();
    assert_eq!(doc.encoding, Some(TextEncoding::Utf16Le));
    assert_eq!(doc.title.as_deref(), Some("Grüße"));
    assert!(doc.text.contains("Hallo Welt"));

    let mut be = vec![0xFE, 0xFF];
    be.extend("<p>Bonjour</p>".encode_utf16().flat_map(u16::to_be_bytes));
    let doc = load_default(&be, MediaType::Html).unwrap();
    assert_eq!(doc.encoding, Some(TextEncoding::Utf16Be));
    assert_eq!(doc.text.trim(), "Bonjour");

    le.push(b'x');
    assert!(matches!(
        load_default(&le, MediaType::PlainText),
        Err(Error::InvalidEncoding {
            encoding: "utf-16le",
            ..
        })
    ));
    // A UTF-8 BOM promises UTF-8: the offset counts from the submitted bytes.
    assert!(matches!(
        load_default(b"\xEF\xBB\xBFab\xC3", MediaType::PlainText),
        Err(Error::InvalidEncoding { offset: 5, .. })
    ));
}

#[test]
fn empty_documents_are_rejected_for_every_media_type() {
    for media in [MediaType::PlainText, MediaType::Markdown, MediaType::Html] {
        assert_eq!(load_default(b"", media), Err(Error::Empty), "{media}");
        assert_eq!(
            load_default(b" \n\t \r\n", media),
            Err(Error::Empty),
            "{media}"
        );
    }
    assert_eq!(
        load_default(
            b"<html><head><title>T</title><script>var x = 1;</script></head><body> </body></html>",
            MediaType::Html
        ),
        Err(Error::Empty)
    );
    assert_eq!(load_default(b"", MediaType::Pdf), Err(Error::Empty));
}

#[test]
fn oversized_input_is_rejected_not_truncated() {
    let limits = Limits {
        max_bytes: 10,
        ..Limits::default()
    };
    assert_eq!(
        load(b"eleven bytes", MediaType::PlainText, &limits),
        Err(Error::TooLarge {
            bytes: 12,
            limit: 10
        })
    );
    let limits = Limits {
        max_extracted_chars: 5,
        ..Limits::default()
    };
    assert_eq!(
        load("ééééééé".as_bytes(), MediaType::PlainText, &limits),
        Err(Error::TextTooLarge { limit: 5 })
    );
    // Characters, not bytes, are counted.
    assert!(load("ééééé".as_bytes(), MediaType::PlainText, &limits).is_ok());
}

const PAGE: &str = r#"<!DOCTYPE html>
<html><head><title>  Field   Guide </title>
<style>body { color: red; } .secret-style {}</style>
<script>var secretScript = "do not index";</script>
</head>
<body>
<nav><a href="/">Home</a> <a href="/secret-nav">Secret navigation</a></nav>
<h1>Birds of the Coast</h1>
<p>Gulls are   loud
and common.</p><p>Terns dive for fish.</p>
<h2>Identification</h2>
<ul><li>Grey back</li><li>Yellow <b>bill</b></li></ul>
<ol start="3"><li>third</li><li>fourth</li></ol>
<table><tr><th>Species</th><th>Wingspan</th></tr>
<tr><td>Herring gull</td><td>140 cm</td></tr></table>
<noscript>Enable scripts please</noscript>
<template><p>template text</p></template>
<div hidden>hidden text</div>
<pre>line one
  line two</pre>
</body></html>"#;

#[test]
fn html_keeps_visible_text_and_drops_scripts_styles_and_navigation() {
    let doc = load_default(PAGE.as_bytes(), MediaType::Html).unwrap();
    let t = &doc.text;
    for gone in [
        "secretScript",
        "secret-style",
        "color: red",
        "Secret navigation",
        "Home",
        "Enable scripts",
        "template text",
        "hidden text",
    ] {
        assert!(!t.contains(gone), "{gone:?} leaked into {t:?}");
    }
    assert!(t.contains("Gulls are loud and common."), "{t:?}");
    assert!(
        t.contains("Gulls are loud and common.\n\nTerns dive for fish."),
        "paragraphs separated by a blank line: {t:?}"
    );
    assert!(
        t.contains("- Grey back\n- Yellow bill"),
        "list items on their own lines: {t:?}"
    );
    assert!(
        t.contains("3. third\n4. fourth"),
        "ordered list numbering: {t:?}"
    );
    assert!(
        t.contains("Species | Wingspan\nHerring gull | 140 cm"),
        "table rows and cells: {t:?}"
    );
    assert!(
        t.contains("line one\n  line two"),
        "pre keeps its layout: {t:?}"
    );
    assert!(t.starts_with("Birds of the Coast\n\nGulls"), "{t:?}");
    assert_eq!(doc.title.as_deref(), Some("Field Guide"));
    let headings: Vec<(u8, &str)> = doc
        .headings
        .iter()
        .map(|h| (h.level, h.text.as_str()))
        .collect();
    assert_eq!(headings, [(1, "Birds of the Coast"), (2, "Identification")]);
    for h in &doc.headings {
        assert!(doc.text[h.start..].starts_with(&h.text));
    }
    assert_eq!(
        doc.heading_path_at(t.find("Herring").unwrap()).as_deref(),
        Some("Birds of the Coast > Identification")
    );
}

#[test]
fn html_title_falls_back_to_first_h1() {
    let doc = load_default(
        b"<body><h2>Sub</h2><h1>Main  title</h1><p>x</p></body>",
        MediaType::Html,
    )
    .unwrap();
    assert_eq!(doc.title.as_deref(), Some("Main title"));
    let doc = load_default(b"<p>just text</p>", MediaType::Html).unwrap();
    assert_eq!(doc.title, None);
    assert_eq!(doc.text, "just text");
    // An SVG icon's <title> is not the page's.
    let doc = load_default(
        b"<body><svg><title>Close icon</title></svg><h1>Guide</h1><p>x</p></body>",
        MediaType::Html,
    )
    .unwrap();
    assert_eq!(doc.title.as_deref(), Some("Guide"));
}

#[test]
fn pathologically_nested_html_is_rejected_quickly() {
    let t = std::time::Instant::now();
    // Self-closed non-void tags stay open, and stray end tags close nothing.
    for open in [
        "<div>",
        "<span class=\"a>b\">",
        "<b>",
        "<DIV\n>",
        "<div/>",
        "<div></x>",
        // A generic end tag does not close past a special element.
        "<span><div></span>",
        "<b><div></b>",
    ] {
        let depth = 200_000;
        let mut src = open.repeat(depth);
        src.push_str("deep text");
        assert_eq!(
            load_default(src.as_bytes(), MediaType::Html),
            Err(Error::HtmlTooComplex),
            "{open}"
        );
    }
    assert!(
        t.elapsed().as_secs() < 10,
        "rejection is fast: {:?}",
        t.elapsed()
    );

    // Ordinary structure passes: moderate nesting, many siblings, unclosed
    // paragraphs and list items, void elements, markup inside comments and scripts.
    let mut src = "<div>".repeat(200);
    for i in 0..20_000 {
        src.push_str(&format!("<p>para {i}<br><img src=x><li>item"));
    }
    src.push_str("<!-- <div><div><div> --><script>if (a<b) { x = '<div>'.repeat(9) }</script>");
    // An inline SVG of many self-closed shapes: they close themselves there.
    src.push_str("<svg>");
    src.push_str(&"<path d=\"M0 0\"/><circle r=\"1\"/>".repeat(20_000));
    src.push_str("</svg>");
    src.push_str(&"</div>".repeat(200));
    let doc = load_default(src.as_bytes(), MediaType::Html).unwrap();
    assert!(doc.text.contains("para 19999"));
    assert!(!doc.text.contains("repeat"));
}

#[test]
fn markdown_text_is_kept_as_written_with_headings_found() {
    let src = "# Guide\n\nIntro *text*.\n\n## Install\n\nRun `cargo`.\n\nSetext\n------\n\n```\n# not a heading\n```\n";
    let doc = load_default(src.as_bytes(), MediaType::Markdown).unwrap();
    assert_eq!(doc.text, src);
    assert_eq!(doc.title.as_deref(), Some("Guide"));
    let headings: Vec<(u8, &str, usize)> = doc
        .headings
        .iter()
        .map(|h| (h.level, h.text.as_str(), h.start))
        .collect();
    assert_eq!(
        headings,
        [
            (1, "Guide", 0),
            (2, "Install", src.find("## Install").unwrap()),
            (2, "Setext", src.find("Setext").unwrap()),
        ]
    );
    assert_eq!(
        doc.heading_path_at(src.find("Run").unwrap()).as_deref(),
        Some("Guide > Install")
    );
    assert_eq!(
        doc.heading_path_at(src.find("not a").unwrap()).as_deref(),
        Some("Guide > Setext")
    );
}
