//! `mapchaos fetch`: a signed `GET` of a sidecar's storm API — a storm's
//! status and report, its HTML report page, its history for `mapchaos
//! check`, or its delete journal — since the
//! sidecar answers only requests signed by the operator's key for its pod.

use std::io::Write;

use mapchaos_operator::plan::Endpoint;
use mapchaos_operator::signing_key::StormSigner;
use mapchaos_operator::storm_client::{SIDECAR_PORT, StormClient};

use crate::exit::Exit;

/// `mapchaos fetch`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example (the target's fields are in the MapChaos status.targets):\n  \
    mapchaos fetch 10.1.2.3 /v1/storms/ID/history --pod shop/cart-0 --pod-uid UID \\\n    \
    --signing-key-file signing-key.pem > history.json && mapchaos check history.json\n  \
    mapchaos fetch 10.1.2.3 /v1/storms/ID/report --pod shop/cart-0 --pod-uid UID \\\n    \
    --signing-key-file signing-key.pem > report.html\n\n\
    Exit status: 0 the sidecar answered 2xx (the body is on stdout), 2 bad input, \
    4 the sidecar refused or could not be reached."
)]
pub struct FetchArgs {
    /// The sidecar's pod IP (its HTTP port is --port).
    pub ip: String,

    /// What to read: /v1/storms/ID (status and report, JSON),
    /// /v1/storms/ID/report (the HTML report page; …/report/timelines/N
    /// draws at most N timelines), /v1/storms/ID/history (for mapchaos
    /// check) or /v1/storms/ID/audit (the delete journal).
    pub path: String,

    /// The pod the sidecar runs in, NAMESPACE/NAME: the request is signed
    /// for it, and any other pod's sidecar refuses it.
    #[arg(long)]
    pub pod: String,

    /// The pod's uid (`status.targets[].podUid`); a sidecar that knows its
    /// uid refuses a request without it.
    #[arg(long, default_value = "")]
    pub pod_uid: String,

    /// The operator's Ed25519 signing key (PEM PKCS#8 or 64 hex
    /// characters), as the chart's Secret holds it.
    #[arg(long, env = "MAPCHAOS_SIGNING_KEY_FILE")]
    pub signing_key_file: std::path::PathBuf,

    /// The sidecar's HTTP port.
    #[arg(long, default_value_t = SIDECAR_PORT)]
    pub port: u16,
}

pub fn run(args: FetchArgs) -> Exit {
    let Some((namespace, pod)) = args
        .pod
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
    else {
        return Exit::bad_input(format!("--pod must be NAMESPACE/NAME (got {:?})", args.pod));
    };
    if !args.path.starts_with("/v1/storms/") || args.path.contains(['?', '#', ' ']) {
        return Exit::bad_input(format!(
            "the path must be /v1/storms/ID, /v1/storms/ID/report, /v1/storms/ID/history or /v1/storms/ID/audit (got {:?})",
            args.path
        ));
    }
    if args.ip.parse::<std::net::IpAddr>().is_err() {
        return Exit::bad_input(format!("{:?} is not an IP address", args.ip));
    }
    let signer = match StormSigner::from_file(&args.signing_key_file) {
        Ok(signer) => signer,
        Err(error) => return Exit::bad_input(format!("--signing-key-file: {error}")),
    };
    let target = Endpoint {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        uid: args.pod_uid.clone(),
        ip: args.ip.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return Exit::cannot_run(format!("cannot start the async runtime: {error}")),
    };
    let client = StormClient::new(signer).with_port(args.port);
    let answer = runtime.block_on(client.get_raw(&target, &args.path));
    match answer {
        Ok((status, body)) if status.is_success() => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&body).and_then(|()| stdout.flush()) {
                Ok(()) => Exit::success(),
                Err(error) => Exit::cannot_run(format!("cannot write the answer: {error}")),
            }
        }
        Ok((status, body)) => Exit::cannot_run(format!(
            "GET {} on {}: {status}: {}",
            args.path,
            args.ip,
            String::from_utf8_lossy(&body).trim()
        )),
        Err(error) => Exit::cannot_run(error),
    }
}
