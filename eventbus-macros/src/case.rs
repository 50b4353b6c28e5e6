//! Default event names: `UserRegistered` → `user.registered`.

/// Splits a Rust type name at its camel-case humps, lower-cases the words
/// and joins them with `.`.
///
/// - `UserRegistered` → `user.registered`
/// - `HTTPRequestSent` → `http.request.sent` (an acronym ends before the
///   capital that starts the next word)
/// - `OrderV2Placed` → `order.v2.placed` (digits stay with their word)
/// - `user_registered` → `user.registered` (underscores separate words too)
pub fn dotted(type_name: &str) -> String {
    let name = type_name.strip_prefix("r#").unwrap_or(type_name);
    let chars: Vec<char> = name.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        if c.is_uppercase() && !word.is_empty() {
            let prev = chars[i - 1];
            let next_is_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let hump = prev.is_lowercase() || prev.is_ascii_digit();
            let acronym_end = prev.is_uppercase() && next_is_lower;
            if hump || acronym_end {
                words.push(std::mem::take(&mut word));
            }
        }
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words.join(".")
}

#[cfg(test)]
mod tests {
    use super::dotted;

    #[test]
    fn humps() {
        assert_eq!(dotted("UserRegistered"), "user.registered");
        assert_eq!(dotted("OrderPlaced"), "order.placed");
        assert_eq!(dotted("HTTPRequestSent"), "http.request.sent");
        assert_eq!(dotted("Ping"), "ping");
        assert_eq!(dotted("OrderV2Placed"), "order.v2.placed");
        assert_eq!(dotted("IOError"), "io.error");
        assert_eq!(dotted("ABC"), "abc");
        assert_eq!(dotted("user_registered"), "user.registered");
        assert_eq!(dotted("r#Match"), "match");
        assert_eq!(dotted("Order2FAEnabled"), "order2.fa.enabled");
    }
}
