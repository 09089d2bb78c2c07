//! A newcomer's first hour, taken from the docs themselves: every command
//! line README.md and docs/ show is one the binary (or script) accepts, and
//! the quick start and walkthrough work when followed literally, in a fresh
//! shell, on a fresh checkout's dev config.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use hookgate::cli::Cli;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// README.md and every Markdown file under docs/, but docs/design/: design
/// notes record what was run during an investigation (wrapper scripts with
/// `"$@"`, say), they are not instructions to follow.
fn doc_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && path.file_name().is_some_and(|n| n == "design") {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![repo("README.md")];
    walk(&repo("docs"), &mut files);
    files
}

/// The lines of a file's fenced code blocks, with their line numbers.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut inside = false;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
        } else if inside {
            lines.push((n + 1, line.trim().to_owned()));
        }
    }
    lines
}

/// A shell line without its trailing `# comment`, split into the commands
/// joined by `&&`, `;` or `|`, each as words (redirections dropped).
fn commands(line: &str) -> Vec<Vec<String>> {
    let words = shlex::split(line).unwrap_or_else(|| panic!("unbalanced quotes: {line}"));
    let mut out = vec![Vec::new()];
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            w if w.starts_with('#') => break,
            "&&" | "||" | ";" | "|" | "&" => out.push(Vec::new()),
            ">" | ">>" | "<" | "2>" => {
                words.next();
            }
            _ => out.last_mut().unwrap().push(word),
        }
    }
    out.retain(|c| !c.is_empty());
    out
}

/// Why `command` (a `hookgate …` or `scripts/…` command) would not run as
/// written, or `None`.
fn refused(command: &[String]) -> Option<String> {
    let program = command[0].as_str();
    if program == "hookgate" || program.ends_with("/hookgate") {
        let mut args = command.to_vec();
        args[0] = "hookgate".into();
        return match Cli::try_parse_from(&args) {
            Ok(_) => None,
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => None,
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion => None,
            Err(e) => Some(e.render().to_string()),
        };
    }
    let script = repo(program);
    let Ok(text) = std::fs::read_to_string(&script) else {
        return Some(format!("{program}: no such script"));
    };
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata(&script).unwrap().permissions().mode() & 0o111 == 0 {
        return Some(format!("{program}: not executable"));
    }
    // A first argument must be one the script's `case` handles
    // (`start|stop|status` in the docs names several).
    let first = command.get(1)?;
    if first.parse::<u64>().is_ok() {
        return None;
    }
    first
        .split('|')
        .find(|alt| {
            !text.lines().any(|l| {
                let label = l.trim_start();
                label.split(')').next().is_some_and(|labels| {
                    label.contains(')') && labels.split('|').any(|x| x == *alt)
                })
            })
        })
        .map(|alt| format!("{program}: `{alt}` is not an argument it handles"))
}

fn is_ours(command: &[String]) -> bool {
    let program = command[0].as_str();
    program == "hookgate" || program.ends_with("/hookgate") || program.starts_with("scripts/")
}

#[test]
fn every_command_line_in_the_docs_is_accepted_as_written() {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(repo("")).unwrap().display().to_string();
        let mut lines = code_lines(&text);
        // Scripts named inline in the prose count too: `scripts/x arg`.
        for (n, line) in text.lines().enumerate() {
            for span in line.split('`').skip(1).step_by(2) {
                if span.starts_with("scripts/") {
                    lines.push((n + 1, span.to_owned()));
                }
            }
        }
        for (n, line) in lines {
            if !(line.starts_with("hookgate ")
                || line.starts_with("target/")
                || line.starts_with("scripts/"))
            {
                continue;
            }
            for command in commands(&line).iter().filter(|c| is_ours(c)) {
                checked += 1;
                if let Some(why) = refused(command) {
                    wrong.push(format!("{name}:{n}: {line}\n{why}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    assert!(
        checked >= 20,
        "only {checked} command lines found in the docs"
    );
}

#[test]
fn the_command_line_check_refuses_what_the_binary_refuses() {
    // The check above has teeth: the spelling README once showed fails it.
    let old = commands("hookgate spool --config hookgate.toml stats");
    assert!(refused(&old[0]).is_some());
    let typo = commands("hookgate tail --conf dev/hookgate.toml");
    assert!(refused(&typo[0]).is_some());
    let script = commands("scripts/broker restart");
    assert!(refused(&script[0]).is_some());
    let fine = commands("scripts/broker start|stop|status   # comment");
    assert_eq!(refused(&fine[0]), None);
}

/// The first fenced block after `heading` in README.md, one command per line.
fn readme_block(heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo("README.md")).unwrap();
    let after = text
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no `{heading}`"))
        .1;
    let block = after
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .map(|line| match line.split_once(" # ") {
            Some((command, _comment)) => command.trim().to_owned(),
            None => line.trim().to_owned(),
        })
        .filter(|line| !line.is_empty())
        .collect()
}

/// A checkout as a newcomer has it, in a temp dir: the scripts, the
/// fixtures and a built `target/debug/hookgate` (this test's binary, so the
/// quick start need not build one).
fn fresh_checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scripts")).unwrap();
    for script in ["quickstart", "broker"] {
        std::fs::copy(
            repo(&format!("scripts/{script}")),
            root.join("scripts").join(script),
        )
        .unwrap();
    }
    std::fs::create_dir_all(root.join("tests")).unwrap();
    std::os::unix::fs::symlink(repo("tests/fixtures"), root.join("tests/fixtures")).unwrap();
    std::fs::create_dir_all(root.join("target/debug")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_hookgate"),
        root.join("target/debug/hookgate"),
    )
    .unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `line` run by bash in the checkout, as pasted into a fresh terminal: no
/// secret or log setting from this process's environment.
fn shell(root: &Path, line: &str, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(line).current_dir(root);
    for var in ["RUST_LOG", "HOOKGATE_LOG_FORMAT"] {
        cmd.env_remove(var);
    }
    for (key, _) in std::env::vars() {
        if key.ends_with("_PASSWORD") || key.ends_with("_TOKEN") || key.ends_with("_KEY") {
            cmd.env_remove(key);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

/// Lines of a child's pipe, as they come.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reads lines until one satisfies `done`; all of them, or a panic naming
/// `what` after 60 s.
fn read_until(rx: &mpsc::Receiver<String>, what: &str, done: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let stop = done(&line);
                seen.push(line);
                if stop {
                    return seen;
                }
            }
            Err(_) => panic!("no {what} within 60 s; got:\n{}", seen.join("\n")),
        }
    }
}

/// The `curl …` command in printed text, continuation lines joined.
fn curl_in(text: &[String]) -> String {
    let start = text
        .iter()
        .position(|l| l.trim_start().starts_with("curl "))
        .unwrap_or_else(|| panic!("no curl printed:\n{}", text.join("\n")));
    let mut command = Vec::new();
    for line in &text[start..] {
        command.push(line.trim().to_owned());
        if !line.ends_with('\\') {
            break;
        }
    }
    command.join("\n")
}

/// Runs a pasted curl; the gateway's JSON answer.
fn paste(root: &Path, curl: &str) -> Value {
    let out = shell(root, curl, &[]).output().unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{curl}\n{body}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{curl}\nanswered {body:?}: {e}"))
}

/// A command in its own process group, as a terminal runs it: a signal
/// reaches the script and whatever it started, like Ctrl-C does.
struct Running(Child);

impl Running {
    fn signal(&mut self, signal: &str) -> std::process::ExitStatus {
        let group = format!("-{}", self.0.id());
        Command::new("kill")
            .args([signal, "--", &group])
            .status()
            .unwrap();
        self.0.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.signal("-KILL");
        }
    }
}

fn spawn(mut cmd: Command) -> (Running, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines_of(child.stdout.take().unwrap());
    let err = lines_of(child.stderr.take().unwrap());
    (Running(child), out, err)
}

#[test]
fn the_quick_start_and_the_walkthrough_work_as_written() {
    let quick_start = readme_block("## Quick start (fresh Debian with Rust)");
    let walkthrough = readme_block("## Try it end to end");
    assert_eq!(quick_start[0], "scripts/quickstart");
    assert_eq!(walkthrough.len(), 4, "{walkthrough:?}");
    assert_eq!(walkthrough[0], quick_start[0]);

    let checkout = fresh_checkout();
    let root = checkout.path();
    let listen = format!("127.0.0.1:{}", free_port());
    let env = [
        ("HOOKGATE_BIN", "target/debug/hookgate".to_owned()),
        ("HOOKGATE_DEV_LISTEN", listen.clone()),
        ("HOOKGATE_DEV_ADMIN", format!("127.0.0.1:{}", free_port())),
        // The tests' vhost: a dev gateway's `hookgate.events` never sees this.
        ("HOOKGATE_DEV_BROKER_URL", crate::support::amqp_url()),
    ];

    // Terminal 1: the quick start, which ends by running the gateway.
    let (mut gateway, banner, gateway_log) = spawn(shell(root, &walkthrough[0], &env));
    let banner = read_until(&banner, "quick start banner", |l| {
        l.starts_with("Ctrl-C stops")
    });
    read_until(&gateway_log, "gateway start", |l| {
        l.contains("Connected to the broker.")
    });
    let config = std::fs::read_to_string(root.join("dev/hookgate.toml")).unwrap();
    assert!(
        !config.contains("${"),
        "the dev config needs no environment:\n{config}"
    );

    // Terminal 2: tail, as the walkthrough and the banner say.
    assert!(
        banner.iter().any(|l| l.trim() == walkthrough[1]),
        "the banner points at `{}`:\n{}",
        walkthrough[1],
        banner.join("\n")
    );
    let (mut tail, events, tail_log) = spawn(shell(root, &walkthrough[1], &[]));
    read_until(&tail_log, "tail start", |l| l.starts_with("tail: watching"));

    // Terminal 3: the banner's curl, pasted.
    let signed = paste(root, &curl_in(&banner));
    let signed_id = signed["id"].as_str().expect("an event id").to_owned();

    // `send`, twice: the same id both times, and no false ERROR.
    let mut sent_ids = Vec::new();
    for _ in 0..2 {
        let out = shell(root, &walkthrough[2], &[]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", walkthrough[2]);
        assert!(
            !stderr.contains("ERROR"),
            "send succeeded but said:\n{stderr}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (id, kind) = stdout.trim().split_once(' ').expect("`<id> <type>`");
        assert_eq!(kind, "payment.succeeded");
        sent_ids.push(id.to_owned());
    }
    assert_eq!(sent_ids[0], sent_ids[1]);

    // `sign`'s curl, pasted as printed.
    let out = shell(root, &walkthrough[3], &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let refund = paste(root, &curl_in(&printed));
    let refund_id = refund["id"].as_str().expect("an event id").to_owned();

    // What tail printed, in order of publication.
    let expected = [
        format!("usaepay-main.payment.succeeded payment.succeeded {signed_id} "),
        format!(
            "sticky-main.payment.succeeded payment.succeeded {} ",
            sent_ids[0]
        ),
        format!(
            "sticky-main.payment.succeeded payment.succeeded {} ",
            sent_ids[0]
        ),
        format!("usaepay-main.refund.succeeded refund.succeeded {refund_id} "),
    ];
    let mut lines = Vec::new();
    for want in &expected {
        lines.extend(read_until(&events, want, |l| l.starts_with(want.as_str())));
    }
    let line = |want: &str| {
        lines
            .iter()
            .rev()
            .find(|l| l.starts_with(want))
            .unwrap()
            .clone()
    };
    assert!(line(&expected[0]).ends_with(" 5.00 USD"), "{lines:?}");
    let sticky: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with(&expected[1]))
        .collect();
    assert!(sticky[0].ends_with(" 3.60 GBP"), "{lines:?}");
    assert!(sticky[1].ends_with(" 3.60 GBP (duplicate)"), "{lines:?}");
    assert!(line(&expected[3]).ends_with(" 12.34 USD"), "{lines:?}");

    // Ctrl-C ends both cleanly.
    assert!(tail.signal("-INT").success(), "tail exits 0 on Ctrl-C");
    assert!(
        gateway.signal("-INT").success(),
        "the gateway exits 0 on Ctrl-C"
    );

    // Run again, the quick start keeps the config (and its secrets).
    let (_again, banner, _log) = spawn(shell(root, &walkthrough[0], &env));
    read_until(&banner, "the quick start's word on the config", |l| {
        l.contains("keeping dev/hookgate.toml")
    });
    assert_eq!(
        std::fs::read_to_string(root.join("dev/hookgate.toml")).unwrap(),
        config
    );
}

#[test]
fn the_module_maps_name_every_module_and_nothing_else() {
    // What is in src/: `name.rs` files and `name/` folders.
    let mut on_disk: Vec<String> = std::fs::read_dir(repo("src"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                format!("{name}/")
            } else {
                name
            }
        })
        .collect();
    on_disk.sort();
    let lib = std::fs::read_to_string(repo("src/lib.rs")).unwrap();
    let block = lib
        .split("//! ```text\n")
        .nth(1)
        .unwrap()
        .split("//! ```")
        .next()
        .unwrap();
    let mut crate_map: Vec<String> = block
        .lines()
        .filter_map(|l| {
            l.strip_prefix("//! ")?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .collect();
    crate_map.sort();
    assert_eq!(crate_map, on_disk, "the layout in src/lib.rs's doc");
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let mut dev_map: Vec<String> = readme
        .lines()
        .filter_map(|l| {
            l.strip_prefix("src/")?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .collect();
    dev_map.sort();
    assert_eq!(dev_map, on_disk, "the map in README's Development section");
}

#[test]
fn the_configuration_table_has_one_well_formed_row_per_key() {
    // Rows once went astray in a hand-kept table: `source.rate_limit` held
    // the spool's text and `spool.max_bytes` appeared twice. The table is
    // generated now; this checks the rendering.
    let section = std::fs::read_to_string(repo("docs/configuration.md")).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut rows = 0;
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        // Markdown splits cells at every `|` not escaped, inside backticks too.
        let cells: Vec<String> = line
            .trim()
            .trim_matches('|')
            .replace("\\|", "\u{0}")
            .split('|')
            .map(|c| c.trim().replace('\u{0}', "|"))
            .collect();
        assert_eq!(cells.len(), 3, "key | default | meaning: {line}");
        for key in cells[0].split(", ") {
            assert!(seen.insert(key.to_owned()), "{key} has two rows");
            assert!(key.starts_with('`') && key.ends_with('`'), "{line}");
        }
        rows += 1;
    }
    assert!(rows > 50, "only {rows} rows read");
}
