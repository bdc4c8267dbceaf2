//! The partner SDKs under sdk/ (issue 31), each built the way it would be
//! published and installed from that build into a scratch place, as a
//! partner would install it from a registry, then its own test suite run
//! against a real keygate started by sdk/testbed.py (main server in gateway
//! mode, a copy with its clock shifted, a copy whose database is locked).
//! A missing toolchain fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::{keygate_bin, nested_cargo};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command, failing the test with its output when it fails.
fn run(command: &mut Command) -> String {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (scripts/test installs it)"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    format!("{stdout}{stderr}")
}

/// `sdk/testbed.py -- <the suite>`: the suite's environment names a fresh
/// keygate of this build. The suite's own directory and environment are
/// kept.
fn under_testbed(suite: &Command) -> Command {
    let mut c = Command::new("python3");
    c.arg(repo().join("sdk/testbed.py"))
        .args(["--keygate", keygate_bin(), "--"])
        .arg(suite.get_program())
        .args(suite.get_args());
    if let Some(dir) = suite.get_current_dir() {
        c.current_dir(dir);
    }
    for (name, value) in suite.get_envs() {
        match value {
            Some(value) => c.env(name, value),
            None => c.env_remove(name),
        };
    }
    c
}

/// A copy of sdk/<language>, so that building it leaves nothing in the tree.
fn copy_of(language: &str, scratch: &Path) -> PathBuf {
    let to = scratch.join(language);
    run(Command::new("cp")
        .arg("-r")
        .arg(repo().join("sdk").join(language))
        .arg(&to));
    to
}

#[test]
fn python_wheel_in_a_fresh_venv() {
    let scratch = tempfile::tempdir().unwrap();
    let source = copy_of("python", scratch.path());
    let dist = scratch.path().join("dist");
    run(Command::new("python3")
        .args(["-m", "pip", "wheel", "--quiet", "--no-deps", "-w"])
        .arg(&dist)
        .arg(&source));
    let wheel = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("pip wheel made a wheel");
    let venv = scratch.path().join("venv");
    // requests and httpx come from the system (scripts/test installs
    // them); keygate_client only from the wheel.
    run(Command::new("python3")
        .args(["-m", "venv", "--system-site-packages"])
        .arg(&venv));
    let python = venv.join("bin/python");
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--no-deps"])
        .arg(&wheel));
    let tests = repo().join("sdk/python/tests");
    let out = run(&mut under_testbed(
        Command::new(&python)
            .args(["-m", "unittest", "discover", "-v", "-s"])
            .arg(&tests)
            .current_dir(scratch.path()),
    ));
    // The package under test is the installed wheel, not the source tree.
    let imported = run(Command::new(&python)
        .args([
            "-c",
            "import keygate_client; print(keygate_client.__file__)",
        ])
        .current_dir(scratch.path()));
    assert!(imported.contains("venv"), "{imported}");
    assert!(out.contains("OK"), "{out}");
}

/// The files a package ships, as its packer lists them.
fn assert_ships(listing: &str, wanted: &[&str], unwanted: &[&str]) {
    for file in wanted {
        assert!(
            listing.contains(file),
            "the package lacks {file}:\n{listing}"
        );
    }
    for file in unwanted {
        assert!(
            !listing.contains(file),
            "the package ships {file}:\n{listing}"
        );
    }
}

#[test]
fn node_tarball_in_a_scratch_project() {
    let scratch = tempfile::tempdir().unwrap();
    let package = repo().join("sdk/node");
    let listing = run(Command::new("npm")
        .args(["pack", "--dry-run", "--loglevel=notice"])
        .current_dir(&package));
    assert_ships(
        &listing,
        &[
            "src/index.js",
            "src/index.d.ts",
            "README.md",
            "CHANGELOG.md",
            "LICENSE",
            "package.json",
        ],
        &["test/", "node_modules"],
    );
    run(Command::new("npm")
        .args(["pack", "--loglevel=error", "--pack-destination"])
        .arg(scratch.path())
        .current_dir(&package));
    // A partner's project: undici and TypeScript pinned by its lock file,
    // then the tarball as it would come from the registry.
    let project = scratch.path().join("project");
    run(Command::new("cp")
        .arg("-r")
        .arg(package.join("test"))
        .arg(&project));
    let npm = |args: &[&str]| {
        run(Command::new("npm")
            .args(args)
            .args(["--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&project))
    };
    npm(&["ci"]);
    npm(&["install", "--no-save", "../keygate-client-0.1.0.tgz"]);
    // The published types compile against the API as a partner uses it.
    run(Command::new("node")
        .args(["node_modules/typescript/bin/tsc", "-p", "."])
        .current_dir(&project));
    let out = run(&mut under_testbed(
        Command::new("node").arg("--test").current_dir(&project),
    ));
    assert!(out.contains("# fail 0"), "{out}");
}

#[test]
fn go_module_through_a_replace() {
    let scratch = tempfile::tempdir().unwrap();
    let go = |dir: &Path, args: &[&str]| {
        let mut c = Command::new("go");
        c.args(args)
            .current_dir(dir)
            .env("GOCACHE", scratch.path().join("cache"))
            .env("GOPATH", scratch.path().join("gopath"))
            .env("GOFLAGS", "-mod=mod")
            .env("KEYGATE_VECTORS", repo().join("tests/vectors/kg1.json"));
        c
    };
    let module = repo().join("sdk/go");
    run(&mut go(&module, &["vet", "./..."]));
    run(&mut go(&module, &["test", "-count=1", "./..."]));
    // The partner's module (sdk/go/behaviour) requires the SDK's module
    // path and replaces it with the repository's copy.
    let partner = repo().join("sdk/go/behaviour");
    let out = run(&mut under_testbed(&go(
        &partner,
        &["test", "-count=1", "-v", "."],
    )));
    assert!(out.contains("ok  \tpartner.example/behaviour"), "{out}");
}

#[test]
fn java_jar_on_the_classpath() {
    let scratch = tempfile::tempdir().unwrap();
    let sources = |dir: &str| -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![repo().join("sdk/java").join(dir)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "java") {
                    found.push(path);
                }
            }
        }
        found
    };
    let classes = scratch.path().join("classes");
    run(Command::new("javac")
        .args(["-Xlint:all", "-Werror", "--release", "17", "-d"])
        .arg(&classes)
        .args(sources("src/main/java")));
    let jar = scratch.path().join("keygate-client-0.1.0.jar");
    run(Command::new("jar")
        .args(["--create", "--file"])
        .arg(&jar)
        .arg("-C")
        .arg(&classes)
        .arg(".")
        .arg("-C")
        .arg(repo().join("sdk/java"))
        .arg("LICENSE"));
    let tests = scratch.path().join("tests");
    run(Command::new("javac")
        .args(["--release", "17", "-d"])
        .arg(&tests)
        .arg("-cp")
        .arg(&jar)
        .args(sources("src/test/java")));
    let classpath = format!("{}:{}", jar.display(), tests.display());
    let out = run(&mut under_testbed(
        Command::new("java")
            .args(["-cp", &classpath, "partner.SdkTests"])
            .current_dir(scratch.path()),
    ));
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn rust_crate_through_a_path_dependency() {
    let listing = run(nested_cargo()
        .args(["package", "--list", "--allow-dirty", "-p", "keygate-client"])
        .current_dir(repo()));
    assert_ships(
        &listing,
        &[
            "Cargo.toml",
            "src/lib.rs",
            "src/reqwest_client.rs",
            "README.md",
            "CHANGELOG.md",
            "LICENSE",
            "tests/vectors.rs",
        ],
        &["target/"],
    );
    // The crate's tests are a separate crate that uses it by path, as a
    // partner's crate would (the workspace shares target/ and Cargo.lock).
    let manifest = repo().join("Cargo.toml");
    let mut suite = nested_cargo();
    suite
        .args([
            "test",
            "-p",
            "keygate-client",
            "--features",
            "reqwest",
            "--manifest-path",
        ])
        .arg(&manifest);
    let out = run(&mut under_testbed(&suite));
    assert!(
        out.contains("test keygates_own_503_is_retried ... ok"),
        "{out}"
    );
}
