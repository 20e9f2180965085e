//! Turning retrieved chunks into the numbered sources of a prompt: chunks of one document
//! that overlap or touch are merged, so the model reads each passage once.

use quire_index::Hit;

/// Merges hits of the same document whose byte spans overlap or touch, keeping the order of
/// each merged group's best-ranked hit.
///
/// A merged hit keeps the best-ranked member's id, scores and page, and covers the union of
/// the members' spans; its text is that span of the document's extracted text. Hits whose text
/// is not exactly their span (which quire never stores) are left as they are.
pub fn merge_overlapping(hits: Vec<Hit>) -> Vec<Hit> {
    let mut merged: Vec<Hit> = Vec::with_capacity(hits.len());
    for mut current in hits {
        // Where `current` goes: after every better-ranked source, or, once it has joined one,
        // at that source's place.
        let mut slot = merged.len();
        // Joining can bridge two earlier sources, so look again after each join.
        while let Some((i, (text, start, end))) = merged
            .iter()
            .enumerate()
            .find_map(|(i, m)| joinable(m, &current).map(|j| (i, j)))
        {
            let other = merged.remove(i);
            if i < slot {
                // `other` ranked better: the joined source takes its identity and place.
                current = other;
                slot = i;
            }
            current.chunk.text = text;
            current.chunk.start = start;
            current.chunk.end = end;
        }
        merged.insert(slot, current);
    }
    merged
}

/// The text and span of `a` and `b` joined, when they are spans of one document that overlap
/// or touch and both texts are exactly their spans.
fn joinable(a: &Hit, b: &Hit) -> Option<(String, u64, u64)> {
    let (ca, cb) = (&a.chunk, &b.chunk);
    if ca.document_id != cb.document_id
        || ca.text.len() as u64 != ca.end.saturating_sub(ca.start)
        || cb.text.len() as u64 != cb.end.saturating_sub(cb.start)
        || ca.start > cb.end
        || cb.start > ca.end
    {
        return None;
    }
    let (first, second) = if ca.start <= cb.start {
        (ca, cb)
    } else {
        (cb, ca)
    };
    let mut text = first.text.clone();
    if second.end > first.end {
        let skip = usize::try_from(first.end - second.start).ok()?;
        text.push_str(second.text.get(skip..)?);
    }
    Some((text, first.start, first.end.max(second.end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_index::StoredChunk;

    const DOC: &str = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota. Kappa lambda.";

    fn hit(doc: &str, start: usize, end: usize, rank: u32) -> Hit {
        Hit {
            rerank_score: None,
            chunk: StoredChunk {
                id: uuid::Uuid::from_u128(u128::from(rank)),
                document_id: doc.into(),
                ordinal: rank,
                page: None,
                start: start as u64,
                end: end as u64,
                text: DOC[start..end].into(),
                metadata: Default::default(),
            },
            dense_score: None,
            dense_rank: Some(rank),
            bm25_score: None,
            bm25_rank: None,
            fused_score: 0.0,
        }
    }

    #[test]
    fn overlapping_chunks_of_one_document_become_one_source() {
        let merged = merge_overlapping(vec![
            hit("a", 18, 53, 1),
            hit("b", 0, 17, 2),
            hit("a", 0, 37, 3),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].chunk.text, DOC[0..53]);
        assert_eq!((merged[0].chunk.start, merged[0].chunk.end), (0, 53));
        // The best-ranked member keeps its identity and place.
        assert_eq!(merged[0].dense_rank, Some(1));
        assert_eq!(merged[1].chunk.document_id, "b");
    }

    #[test]
    fn a_chunk_bridging_two_sources_joins_all_three() {
        let merged = merge_overlapping(vec![
            hit("a", 0, 17, 1),
            hit("a", 38, 67, 2),
            hit("a", 10, 45, 3),
        ]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].chunk.text, DOC[0..67]);
        assert_eq!(merged[0].dense_rank, Some(1));
    }

    #[test]
    fn separate_passages_and_contained_chunks() {
        let merged = merge_overlapping(vec![hit("a", 0, 17, 1), hit("a", 38, 53, 2)]);
        assert_eq!(merged.len(), 2, "a gap keeps them apart");
        let merged = merge_overlapping(vec![hit("a", 18, 37, 1), hit("a", 0, 53, 2)]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].chunk.text, DOC[0..53]);
    }
}
