//! Property tests of the policy grammar: any input parses or errors, never panics; errors are
//! one line; formatting round-trips.

use keepalive::policy::{Key, Policy, UserTimeout};
use proptest::prelude::*;

fn check_any(s: &str) {
    match Policy::parse(s) {
        Ok(p) => {
            assert!(p.idle().is_none_or(|v| (1..=32767).contains(&v)));
            assert!(p.interval().is_none_or(|v| (1..=32767).contains(&v)));
            assert!(p.count().is_none_or(|v| (1..=127).contains(&v)));
            if let Some(UserTimeout::Millis(ms)) = p.user_timeout() {
                assert!(ms <= i32::MAX as u32);
            }
            assert_eq!(Policy::parse(&p.to_string()), Ok(p), "round trip of {s:?}");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty() && !msg.contains('\n'), "{s:?} gave {msg:?}");
        }
    }
}

/// Strings made of the grammar's own pieces reach far deeper than random bytes.
fn grammarish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("idle".to_owned()),
        Just("interval".to_owned()),
        Just("count".to_owned()),
        Just("user-timeout".to_owned()),
        Just("auto".to_owned()),
        Just("=".to_owned()),
        Just(",".to_owned()),
        Just(" ".to_owned()),
        Just("-".to_owned()),
        prop_oneof![Just("ms"), Just("s"), Just("m"), Just("h"), Just("x")].prop_map(str::to_owned),
        any::<u64>().prop_map(|n| n.to_string()),
        (0u32..40000).prop_map(|n| n.to_string()),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::option::of(1u32..=32767),
        prop::option::of(1u32..=32767),
        prop::option::of(1u32..=127),
        prop::option::of(prop_oneof![
            Just(None),
            (0u32..=i32::MAX as u32).prop_map(Some)
        ]),
    )
        .prop_filter_map("auto past the limit", |(idle, interval, count, user)| {
            let mut p = Policy::empty();
            let mut set = |key, v: Option<String>| v.map_or(Ok(()), |v| p.set(key, &v));
            set(Key::Idle, idle.map(|v| format!("{v}s"))).ok()?;
            set(Key::Interval, interval.map(|v| v.to_string())).ok()?;
            set(Key::Count, count.map(|v| v.to_string())).ok()?;
            let user = user.map(|u| u.map_or_else(|| "auto".to_owned(), |ms| format!("{ms}ms")));
            set(Key::UserTimeout, user).ok()?;
            // The grammar has no spelling for "nothing": an empty policy is refused.
            (!p.is_empty()).then_some(p)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn any_string_parses_or_errors(s in any::<String>()) {
        check_any(&s);
    }

    #[test]
    fn grammar_shaped_strings_parse_or_error(s in grammarish()) {
        check_any(&s);
    }

    #[test]
    fn format_then_parse_is_identity(p in policy()) {
        prop_assert_eq!(Policy::parse(&p.to_string()), Ok(p));
    }
}

mod injection {
    use keepalive::policy::injection::Injection;
    use proptest::prelude::*;

    fn shimmy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("idle=30".to_owned()),
            Just("mode=force".to_owned()),
            Just("mode=default".to_owned()),
            Just("ports=".to_owned()),
            Just("dest=".to_owned()),
            Just("log=syslog".to_owned()),
            Just("log=/tmp/x".to_owned()),
            Just("inherit=no".to_owned()),
            Just(",".to_owned()),
            Just("-".to_owned()),
            Just("/".to_owned()),
            Just("::1".to_owned()),
            Just("198.18.0.0".to_owned()),
            (0u32..70000).prop_map(|n| n.to_string()),
        ];
        prop::collection::vec(piece, 0..14).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn any_text_parses_or_errors_in_one_line(s in any::<String>()) {
            if let Err(e) = Injection::parse(&s) {
                prop_assert!(!e.to_string().contains('\n'));
            }
        }

        #[test]
        fn shim_shaped_text_round_trips(s in shimmy()) {
            match Injection::parse(&s) {
                Ok(i) => prop_assert_eq!(Injection::parse(&i.to_string()), Ok(i)),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        #[test]
        fn compatibility_values_parse_or_error(v in any::<String>(), var in 0usize..6) {
            let name = keepalive::policy::injection::COMPAT_VARS[var].0;
            let _ = Injection::from_env(|k| (k == name).then_some(v.as_bytes()));
        }
    }
}
