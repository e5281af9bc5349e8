//! Reading text the way a question is read: words lowercased, the words that carry no meaning
//! dropped ("how do I …"), and each word reduced to its stem, so "configuring" finds
//! "configuration". The same analyzer runs when a document is indexed (its `*_stem` fields)
//! and when a plain question is searched, so both sides agree.
//!
//! The stemmer and the base stop-word lists are tantivy's (Snowball); for English the list is
//! Lucene's, widened with the question words and pronouns a question is full of.

use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    TokenStream,
};

/// The name the analyzer is registered under in the index.
pub const ANALYZER: &str = "cmem_stem";

/// Words a question is made of that say nothing about what is asked, beyond Lucene's list.
const QUESTION_WORDS: [&str; 58] = [
    "how", "what", "why", "where", "when", "who", "whom", "which", "whose", "do", "does", "did",
    "done", "doing", "i", "me", "my", "mine", "we", "us", "our", "you", "your", "he", "she", "him",
    "her", "its", "them", "can", "could", "should", "would", "shall", "may", "might", "must", "am",
    "been", "being", "has", "have", "had", "having", "get", "got", "there", "here", "about",
    "from", "so", "than", "too", "very", "just", "any", "some", "all",
];

/// Lucene's English stop words (tantivy's list) and [`QUESTION_WORDS`].
fn english_stop_words() -> Vec<String> {
    const LUCENE: [&str; 33] = [
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is",
        "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there",
        "these", "they", "this", "to", "was", "will", "with",
    ];
    LUCENE
        .iter()
        .chain(QUESTION_WORDS.iter())
        .map(|w| w.to_string())
        .collect()
}

fn language(name: &str) -> Option<Language> {
    use Language::*;
    Some(match name {
        "arabic" => Arabic,
        "danish" => Danish,
        "dutch" => Dutch,
        "english" => English,
        "finnish" => Finnish,
        "french" => French,
        "german" => German,
        "greek" => Greek,
        "hungarian" => Hungarian,
        "italian" => Italian,
        "norwegian" => Norwegian,
        "portuguese" => Portuguese,
        "romanian" => Romanian,
        "russian" => Russian,
        "spanish" => Spanish,
        "swedish" => Swedish,
        "tamil" => Tamil,
        "turkish" => Turkish,
        _ => return None,
    })
}

/// The analyzer for `name` (one of [`crate::config::SEARCH_LANGUAGES`]; anything else reads as English): words,
/// lowercased, stop words out, stemmed.
pub fn analyzer(name: &str) -> TextAnalyzer {
    let lang = language(name).unwrap_or(Language::English);
    let stop = if lang == Language::English {
        StopWordFilter::remove(english_stop_words())
    } else {
        StopWordFilter::new(lang).unwrap_or_else(|| StopWordFilter::remove(Vec::<String>::new()))
    };
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(stop)
        .filter(Stemmer::new(lang))
        .build()
}

/// The stems of `text` as the analyzer reads it, in order, each once.
pub fn stems(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(t) = stream.next() {
        if !out.contains(&t.text) {
            out.push(t.text.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_is_read_for_its_meaning() {
        let mut a = analyzer("english");
        assert_eq!(
            stems(&mut a, "How do I configure the retention of events?"),
            ["configur", "retent", "event"]
        );
        // forms meet at one stem
        assert_eq!(
            stems(&mut a, "configuring configuration configured"),
            ["configur"]
        );
        // a question of nothing but stop words leaves nothing
        assert!(stems(&mut a, "how do I do it").is_empty());
        let mut de = analyzer("german");
        assert_eq!(stems(&mut de, "die Häuser"), ["haus"]);
    }
}
