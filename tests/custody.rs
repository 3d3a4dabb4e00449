//! Identities held by a KMS or an HSM: `keygen --kms` against moto's KMS in server mode and
//! `keygen --pkcs11` against SoftHSM2, both on this machine and started by the tests
//! (installed by `integration/install-deps.sh`). Each mounts a real bucket with the wrapped
//! identity, and each way access can end is a clear error.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::moto::Moto;
use common::{pattern, run_ok, Workspace};

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Runs a command that must fail; returns its stderr.
fn run_err(cmd: &mut Command) -> String {
    let out: Output = cmd.output().unwrap();
    assert!(!out.status.success(), "{cmd:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// Replaces the workspace's plain identity with one made by `keygen` with `args`.
fn keygen_into(ws: &mut Workspace, env: &dyn Fn(&mut Command), args: &[&str]) {
    std::fs::remove_file(&ws.identity).unwrap();
    let out = run_ok(
        with(env, ws.smpfs())
            .arg("keygen")
            .arg("--out")
            .arg(&ws.identity)
            .args(args),
    );
    ws.recipient = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let text = std::fs::read_to_string(&ws.identity).unwrap();
    assert!(text.contains("SMPFS-WRAPPED-KEY-1"), "{text}");
    assert!(!text.to_uppercase().contains("SMPFS-SECRET-KEY"), "{text}");
}

/// `cmd` with the environment `env` sets.
fn with(env: &dyn Fn(&mut Command), mut cmd: Command) -> Command {
    env(&mut cmd);
    cmd
}

/// Seals two files (one a real DICOM file) to the workspace's recipient; returns them.
fn seal_sample(ws: &Workspace) -> Vec<(&'static str, Vec<u8>)> {
    let files = vec![
        ("scan.bin", pattern(700_000, 3)),
        ("notes/a.txt", b"held by a custodian\n".to_vec()),
    ];
    for (name, data) in &files {
        ws.write_plain(name, data);
    }
    ws.seal_all();
    files
}

fn kms_env(moto: &Moto) -> impl Fn(&mut Command) + '_ {
    move |cmd| {
        cmd.env("AWS_ENDPOINT_URL_KMS", moto.endpoint());
    }
}

#[test]
fn a_kms_held_identity_mounts_records_its_key_and_is_revoked_by_disabling_the_key() {
    let moto = Moto::start();
    let key_id = moto
        .python_for(
            "kms",
            "k = kms.create_key(Description='smpfs test')['KeyMetadata']\n\
             kms.create_alias(AliasName='alias/smpfs-test', TargetKeyId=k['KeyId'])\n\
             print(k['KeyId'])",
        )
        .trim()
        .to_owned();
    let mut ws = Workspace::new();
    let env = kms_env(&moto);
    keygen_into(&mut ws, &env, &["--kms", "aws:alias/smpfs-test"]);
    let text = std::fs::read_to_string(&ws.identity).unwrap();
    assert!(text.contains(&format!("key/{key_id}")), "{text}");

    // `recipient` unwraps through KMS and finds the same key.
    let out = run_ok(with(&env, ws.smpfs()).arg("recipient").arg(&ws.identity));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), ws.recipient);
    // There is no passphrase to change: refused, file unchanged.
    let err = run_err(
        with(&env, ws.smpfs())
            .arg("passwd")
            .arg(&ws.identity)
            .arg("--remove"),
    );
    assert!(err.contains("wrapped by AWS KMS key"), "{err}");
    assert_eq!(std::fs::read_to_string(&ws.identity).unwrap(), text);

    let files = seal_sample(&ws);
    let log = ws.dir.path().join("mount.log");
    let mut cmd = with(&env, ws.mount_command());
    cmd.arg("-f").stderr(std::fs::File::create(&log).unwrap());
    let mount = common::spawn_mount(cmd, ws.mnt(), log);
    for (name, data) in &files {
        assert_eq!(&std::fs::read(ws.mnt().join(name)).unwrap(), data, "{name}");
    }
    let audit = std::fs::read_to_string(ws.dir.path().join("audit.log")).unwrap();
    let first: serde_json::Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    let custody = &first["detail"]["mount"]["key_custody"];
    assert_eq!(custody["kind"], "aws-kms", "{first}");
    assert!(
        custody["key"]
            .as_str()
            .unwrap()
            .ends_with(&format!("key/{key_id}")),
        "{first}"
    );

    // The administrator disables the key: the next unlock fails, naming why.
    moto.python_for("kms", &format!("kms.disable_key(KeyId='{key_id}')"));
    run_ok(ws.smpfs().arg("lock").arg(ws.mnt()));
    let err = run_err(ws.smpfs().arg("unlock").arg(ws.mnt()));
    assert!(
        err.contains("is Disabled") && err.contains("revoked centrally"),
        "{err}"
    );
    let read = std::fs::read(ws.mnt().join("scan.bin")).unwrap_err();
    assert_eq!(read.raw_os_error(), Some(libc::EACCES), "{read}");
    // Re-enabled, the same workstation reads again.
    moto.python_for("kms", &format!("kms.enable_key(KeyId='{key_id}')"));
    run_ok(ws.smpfs().arg("unlock").arg(ws.mnt()));
    assert_eq!(
        std::fs::read(ws.mnt().join("scan.bin")).unwrap(),
        files[0].1
    );
    assert!(mount.unmount().success());

    // Disabled again, a fresh mount is refused before it mounts.
    moto.python_for("kms", &format!("kms.disable_key(KeyId='{key_id}')"));
    let err = run_err(with(&env, ws.mount_command()).arg("-f"));
    assert!(err.contains("is Disabled"), "{err}");
    assert!(!common::is_mounted(&ws.mnt()));
}

#[test]
fn kms_keygen_names_a_wrong_region_an_unknown_alias_and_a_dead_endpoint() {
    let moto = Moto::start();
    moto.python_for(
        "kms",
        "k = kms.create_key()['KeyMetadata']\n\
         kms.create_alias(AliasName='alias/east', TargetKeyId=k['KeyId'])",
    );
    let ws = Workspace::new();
    let out = ws.dir.path().join("id-kms");
    let keygen = |region: &str, key: &str, endpoint: &str| {
        run_err(
            ws.smpfs()
                .env("AWS_ENDPOINT_URL_KMS", endpoint)
                .env("AWS_REGION", region)
                .arg("keygen")
                .arg("--out")
                .arg(&out)
                .args(["--kms", key]),
        )
    };
    let err = keygen("eu-west-1", "aws:alias/east", &moto.endpoint());
    assert!(
        err.contains("alias/east not found in region eu-west-1"),
        "{err}"
    );
    let err = keygen("us-east-1", "aws:alias/no-such-alias", &moto.endpoint());
    assert!(err.contains("alias/no-such-alias not found"), "{err}");
    let err = keygen("us-east-1", "aws:alias/east", "http://127.0.0.1:9");
    assert!(err.contains("cannot reach AWS KMS in us-east-1"), "{err}");
    let err = keygen("us-east-1", "gcp:projects/x", &moto.endpoint());
    assert!(err.contains("aws:ARN_OR_ALIAS"), "{err}");
    assert!(!out.exists(), "a failed keygen wrote {}", out.display());
}

/// A SoftHSM2 installation of its own in a temporary directory, with one token.
struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    fn new(token: &str, pin: &str) -> Self {
        assert!(
            Path::new(SOFTHSM_MODULE).exists(),
            "SoftHSM2 is not installed; run integration/install-deps.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let hsm = SoftHsm { dir };
        run_ok(hsm.env(&mut Command::new("softhsm2-util")).args([
            "--init-token",
            "--free",
            "--label",
            token,
            "--pin",
            pin,
            "--so-pin",
            "so-secret-5678",
        ]));
        hsm
    }

    fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("SOFTHSM2_CONF", self.dir.path().join("softhsm2.conf"))
    }

    fn pin_file(&self, pin: &str) -> PathBuf {
        let path = self.dir.path().join("pin");
        std::fs::write(&path, format!("{pin}\n")).unwrap();
        path
    }
}

#[test]
fn a_pkcs11_held_identity_mounts_and_a_wrong_pin_or_missing_token_is_named() {
    let hsm = SoftHsm::new("smpfs-lab", "1234");
    let pin = hsm.pin_file("1234");
    let uri = format!(
        "pkcs11:token=smpfs-lab;object=smpfs-wrap?module-path={SOFTHSM_MODULE}&pin-source=file:{}",
        pin.display()
    );
    let mut ws = Workspace::new();
    let env = |cmd: &mut Command| {
        hsm.env(cmd);
    };
    keygen_into(&mut ws, &env, &["--pkcs11", &uri]);
    let text = std::fs::read_to_string(&ws.identity).unwrap();
    assert!(!text.contains("1234"), "the PIN was written: {text}");

    let files = seal_sample(&ws);
    let log = ws.dir.path().join("mount.log");
    let mut cmd = with(&env, ws.mount_command());
    cmd.arg("-f").stderr(std::fs::File::create(&log).unwrap());
    let mount = common::spawn_mount(cmd, ws.mnt(), log);
    for (name, data) in &files {
        assert_eq!(&std::fs::read(ws.mnt().join(name)).unwrap(), data, "{name}");
    }
    let audit = std::fs::read_to_string(ws.dir.path().join("audit.log")).unwrap();
    assert!(audit.contains("\"kind\":\"pkcs11\""), "{audit}");
    assert!(mount.unmount().success());

    // A second identity under the same token key: the key is found, not made again.
    let second = ws.dir.path().join("id-2");
    run_ok(
        with(&env, ws.smpfs())
            .arg("keygen")
            .arg("--out")
            .arg(&second)
            .args(["--pkcs11", &uri]),
    );
    run_ok(with(&env, ws.smpfs()).arg("recipient").arg(&second));

    // A wrong PIN: named, and nothing is mounted.
    std::fs::write(&pin, "9999\n").unwrap();
    let err = run_err(with(&env, ws.smpfs()).arg("recipient").arg(&ws.identity));
    assert!(
        err.contains("wrong PIN for PKCS#11 token `smpfs-lab`"),
        "{err}"
    );
    let err = run_err(with(&env, ws.mount_command()).arg("-f"));
    assert!(err.contains("wrong PIN"), "{err}");
    std::fs::write(&pin, "1234\n").unwrap();

    // A token that is not there.
    let missing = uri.replace("token=smpfs-lab", "token=not-plugged-in");
    let err = run_err(
        with(&env, ws.smpfs())
            .arg("keygen")
            .arg("--out")
            .arg(ws.dir.path().join("id-3"))
            .args(["--pkcs11", &missing]),
    );
    assert!(
        err.contains("no PKCS#11 token labelled `not-plugged-in`") && err.contains("`smpfs-lab`"),
        "{err}"
    );
    // A module that is not there.
    let bad_module = uri.replace(SOFTHSM_MODULE, "/nonexistent/libpkcs11.so");
    let err = run_err(
        with(&env, ws.smpfs())
            .arg("keygen")
            .arg("--out")
            .arg(ws.dir.path().join("id-4"))
            .args(["--pkcs11", &bad_module]),
    );
    assert!(
        err.contains("cannot load PKCS#11 module /nonexistent"),
        "{err}"
    );
}
