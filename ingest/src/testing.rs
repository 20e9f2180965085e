//! Fixtures for tests in this and other crates (feature `test-util`).

use lopdf::content::{Content, Operation};
use lopdf::{Dictionary, Object, Stream, StringFormat};

/// Characters per line before a page's text wraps to a new `Tj` line.
const WRAP: usize = 80;

/// Adds a page object with `content` as its content stream; returns a reference to it.
fn add_page(doc: &mut lopdf::Document, pages_id: lopdf::ObjectId, content: Vec<u8>) -> Object {
    let content_id = doc.add_object(Stream::new(Dictionary::new(), content));
    let mut page = Dictionary::new();
    page.set("Type", Object::Name(b"Page".to_vec()));
    page.set("Parent", Object::Reference(pages_id));
    page.set("Contents", Object::Reference(content_id));
    Object::Reference(doc.add_object(page))
}

/// A simple font dictionary with WinAnsiEncoding.
fn win_ansi_font(subtype: &[u8], base_font: &[u8]) -> Dictionary {
    let mut font = Dictionary::new();
    font.set("Type", Object::Name(b"Font".to_vec()));
    font.set("Subtype", Object::Name(subtype.to_vec()));
    font.set("BaseFont", Object::Name(base_font.to_vec()));
    font.set("Encoding", Object::Name(b"WinAnsiEncoding".to_vec()));
    font
}

/// Builds a real PDF with one page per entry of `pages`, set in Helvetica
/// (Type1, WinAnsiEncoding). Each input line is wrapped at about 80
/// characters into separate text lines positioned with `Td`, like a real
/// text layer. Characters outside Latin-1 are written as `?`.
pub fn pdf_with_pages(pages: &[&str]) -> Vec<u8> {
    let mut doc = lopdf::Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(win_ansi_font(b"Type1", b"Helvetica"));
    let mut fonts = Dictionary::new();
    fonts.set("F1", Object::Reference(font_id));
    let mut resources = Dictionary::new();
    resources.set("Font", Object::Dictionary(fonts));
    let resources_id = doc.add_object(resources);

    let mut kids = Vec::new();
    for text in pages {
        let mut ops = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec![Object::Name(b"F1".to_vec()), 11.into()]),
            Operation::new("Td", vec![72.into(), 770.into()]),
        ];
        for line in text.lines().flat_map(wrap) {
            let bytes: Vec<u8> = line
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect();
            ops.push(Operation::new(
                "Tj",
                vec![Object::String(bytes, StringFormat::Literal)],
            ));
            ops.push(Operation::new("Td", vec![0.into(), (-14).into()]));
        }
        ops.push(Operation::new("ET", vec![]));
        let content = Content { operations: ops }.encode().unwrap_or_default();
        kids.push(add_page(&mut doc, pages_id, content));
    }
    finish(&mut doc, pages_id, kids, resources_id)
}

/// Splits `line` at spaces into pieces of at most [`WRAP`] characters
/// (longer words stay whole).
fn wrap(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in line.split_whitespace() {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > WRAP {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Characters of the Type0 test font `/F3`: code `n` (two bytes, from 1)
/// shows the `n`-th of these; code `0x0020` is a space.
pub const CJK_FONT_CHARS: &str = "日本語テキスト";

/// Builds a PDF with one page per entry of `pages`, each entry being the
/// page's raw content stream, and the form XObjects `forms` (name, content)
/// in every page's resources. The fonts are:
///
/// * `/F1`: Helvetica (Type1, WinAnsiEncoding) without widths;
/// * `/F2`: a TrueType font with WinAnsiEncoding and `/Widths` of 500 units
///   for every code from 32 to 126, except 250 for the space;
/// * `/F3`: a Type0 font with Identity-H, 2-byte codes mapped by a ToUnicode
///   CMap to [`CJK_FONT_CHARS`], every glyph 1000 units wide;
/// * `/F4`: a Type0 font with Identity-H whose ToUnicode CMap has every
///   target byte-swapped, as some writers emit: `<0001>` is `H`, `<0002>`
///   is `i`, `<0003>` a space.
///
/// A form whose name starts with `Own` has its own `/Resources` holding
/// `/F2` under the name `/G2`; other forms have none and use the page's.
pub fn pdf_with_content(pages: &[&str], forms: &[(&str, &str)]) -> Vec<u8> {
    let mut doc = lopdf::Document::with_version("1.5");
    let pages_id = doc.new_object_id();

    let f1 = doc.add_object(win_ansi_font(b"Type1", b"Helvetica"));

    let mut sans = win_ansi_font(b"TrueType", b"TestSans");
    sans.set("FirstChar", Object::Integer(32));
    sans.set("LastChar", Object::Integer(126));
    let widths: Vec<Object> = (32..=126)
        .map(|c| Object::Integer(if c == 32 { 250 } else { 500 }))
        .collect();
    sans.set("Widths", Object::Array(widths));
    let f2 = doc.add_object(sans);

    let mut cjk_map = String::from(
        "/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n\
         /CMapName /Test-UCS def /CMapType 2 def\n\
         1 begincodespacerange <0000> <FFFF> endcodespacerange\n",
    );
    let chars: Vec<char> = CJK_FONT_CHARS.chars().collect();
    cjk_map.push_str(&format!("{} beginbfchar\n<0020> <0020>\n", chars.len() + 1));
    for (i, c) in chars.iter().enumerate() {
        cjk_map.push_str(&format!("<{:04X}> <{:04X}>\n", i + 1, u32::from(*c)));
    }
    cjk_map.push_str("endbfchar\nendcmap CMapName currentdict /CMap defineresource pop end end\n");
    let f3 = type0_font(&mut doc, "TestCJK", &cjk_map);

    let swapped_map = "/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n\
        1 begincodespacerange\r<0000> <FFFF>\rendcodespacerange\r\
        3 beginbfchar<0001\r> <4800\r><0002\r> <6900\r><0003\r> <2000\r>endbfchar\r\
        endcmap CMapName currentdict /CMap defineresource pop end end\r";
    let f4 = type0_font(&mut doc, "TestSwapped", swapped_map);

    let mut fonts = Dictionary::new();
    for (name, id) in [("F1", f1), ("F2", f2), ("F3", f3), ("F4", f4)] {
        fonts.set(name, Object::Reference(id));
    }
    let mut xobjects = Dictionary::new();
    for (name, content) in forms {
        let mut dict = Dictionary::new();
        dict.set("Type", Object::Name(b"XObject".to_vec()));
        dict.set("Subtype", Object::Name(b"Form".to_vec()));
        dict.set(
            "BBox",
            Object::Array(vec![0.into(), 0.into(), 612.into(), 792.into()]),
        );
        if name.starts_with("Own") {
            let mut own_fonts = Dictionary::new();
            own_fonts.set("G2", Object::Reference(f2));
            let mut own = Dictionary::new();
            own.set("Font", Object::Dictionary(own_fonts));
            dict.set("Resources", Object::Dictionary(own));
        }
        let id = doc.add_object(Stream::new(dict, content.as_bytes().to_vec()));
        xobjects.set(*name, Object::Reference(id));
    }
    let mut resources = Dictionary::new();
    resources.set("Font", Object::Dictionary(fonts));
    resources.set("XObject", Object::Dictionary(xobjects));
    let resources_id = doc.add_object(resources);

    let mut kids = Vec::new();
    for content in pages {
        kids.push(add_page(&mut doc, pages_id, content.as_bytes().to_vec()));
    }
    finish(&mut doc, pages_id, kids, resources_id)
}

/// Adds a Type0 font with Identity-H, a ToUnicode CMap and glyphs 1000 units wide.
fn type0_font(doc: &mut lopdf::Document, name: &str, to_unicode: &str) -> lopdf::ObjectId {
    let cmap_id = doc.add_object(Stream::new(
        Dictionary::new(),
        to_unicode.as_bytes().to_vec(),
    ));
    let mut system = Dictionary::new();
    system.set("Registry", Object::string_literal("Adobe"));
    system.set("Ordering", Object::string_literal("Identity"));
    system.set("Supplement", Object::Integer(0));
    let mut cid_font = Dictionary::new();
    cid_font.set("Type", Object::Name(b"Font".to_vec()));
    cid_font.set("Subtype", Object::Name(b"CIDFontType2".to_vec()));
    cid_font.set("BaseFont", Object::Name(name.as_bytes().to_vec()));
    cid_font.set("CIDSystemInfo", Object::Dictionary(system));
    cid_font.set("DW", Object::Integer(1000));
    let cid_id = doc.add_object(cid_font);
    let mut font = Dictionary::new();
    font.set("Type", Object::Name(b"Font".to_vec()));
    font.set("Subtype", Object::Name(b"Type0".to_vec()));
    font.set("BaseFont", Object::Name(name.as_bytes().to_vec()));
    font.set("Encoding", Object::Name(b"Identity-H".to_vec()));
    font.set(
        "DescendantFonts",
        Object::Array(vec![Object::Reference(cid_id)]),
    );
    font.set("ToUnicode", Object::Reference(cmap_id));
    doc.add_object(font)
}

/// Completes `doc` with its page tree, catalog and file identifier, and writes it.
fn finish(
    doc: &mut lopdf::Document,
    pages_id: lopdf::ObjectId,
    kids: Vec<Object>,
    resources_id: lopdf::ObjectId,
) -> Vec<u8> {
    let mut tree = Dictionary::new();
    tree.set("Type", Object::Name(b"Pages".to_vec()));
    tree.set("Count", Object::Integer(kids.len() as i64));
    tree.set("Kids", Object::Array(kids));
    tree.set("Resources", Object::Reference(resources_id));
    tree.set(
        "MediaBox",
        Object::Array(vec![0.into(), 0.into(), 612.into(), 792.into()]),
    );
    doc.objects.insert(pages_id, Object::Dictionary(tree));
    let mut catalog = Dictionary::new();
    catalog.set("Type", Object::Name(b"Catalog".to_vec()));
    catalog.set("Pages", Object::Reference(pages_id));
    let catalog_id = doc.add_object(catalog);
    doc.trailer.set("Root", Object::Reference(catalog_id));
    // A file identifier, as real writers emit (encryption keys derive from it).
    let id = Object::String(b"quire-test-pdf-1".to_vec(), StringFormat::Hexadecimal);
    doc.trailer.set("ID", Object::Array(vec![id.clone(), id]));
    doc.compress();
    let mut out = Vec::new();
    // Writing to a Vec cannot fail for a document built this way.
    let _ = doc.save_to(&mut out);
    out
}
