//! Authentication of a `hello`: the [`Authenticator`] trait and [`TokenAuth`], the default: the
//! shared admin and agent tokens (SHA-256 digests compared in constant time), each device's own
//! secret from the [`Registry`], and a verified client certificate ([`PeerCredentials`], mTLS),
//! which authenticates the device it names. The agent token enrolls new ids (issuing a device
//! secret to agents that ask); once an id has a secret, only that secret (or a certificate naming
//! the id) connects as it. The session calls this once per connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use orb_proto::message::{Hello, Role};
use orb_proto::tokens::Access;
use orb_proto::{DeviceId, ErrorBody, ErrorCode};
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::operators::OperatorTokens;
use crate::registry::{self, IssuedSecret, Registry, digest};

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Agent (a device) or operator.
    pub role: Role,
    /// The device id, for agents.
    pub device: Option<DeviceId>,
    /// What an operator credential allows (`None` for agents; an operator without it has full
    /// rights).
    pub access: Option<Access>,
    /// The named operator token presented, whose validity the policy checks on every request.
    pub token: Option<String>,
    /// A device secret issued by this handshake (enrollment), sent once in the welcome.
    pub issued_secret: Option<String>,
}

/// A client certificate the TLS handshake verified against the client CA, and the device id it
/// names (URI SAN `urn:orb:device:ID`, else its CN: `orb_io::tls::identity`), or why it names
/// none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The device id the certificate names, not yet checked as a device id; or why it names none.
    pub identity: Result<String, String>,
}

/// What the transport established about the peer before its `hello`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCredentials {
    /// A verified client certificate (TLS listeners with a client CA).
    pub client_cert: Option<ClientCertificate>,
}

/// Checks the credentials of a `hello`.
pub trait Authenticator: Send + Sync + 'static {
    /// Returns the principal, or an error body (`auth_failed`, `bad_id`, `forbidden`, `id_taken`,
    /// `revoked`) sent to the client.
    fn authenticate<'a>(
        &'a self,
        hello: &'a Hello,
    ) -> Pin<Box<dyn Future<Output = Result<Principal, ErrorBody>> + Send + 'a>>;

    /// [`Authenticator::authenticate`] with what the transport established: the session calls
    /// this one. The default ignores `peer` (the hello's own credentials must do); [`TokenAuth`]
    /// takes a verified client certificate as the credential of the device it names.
    fn authenticate_peer<'a>(
        &'a self,
        hello: &'a Hello,
        peer: &'a PeerCredentials,
    ) -> Pin<Box<dyn Future<Output = Result<Principal, ErrorBody>> + Send + 'a>> {
        let _ = peer;
        self.authenticate(hello)
    }
}

/// The shared tokens (agent and admin) and the registry's device secrets.
pub struct TokenAuth {
    digests: std::sync::RwLock<([u8; 32], [u8; 32])>,
    registry: Arc<Registry>,
    /// `acl.token_devices`: devices without a secret may connect with the shared token.
    token_devices: AtomicBool,
    /// Named operator tokens with roles (`orb tokens add`).
    operators: Option<Arc<OperatorTokens>>,
}

/// Attempts at a fresh random id before giving up (a collision is already unlikely).
const ID_ATTEMPTS: usize = 4;

impl TokenAuth {
    /// Builds the authenticator from the two tokens and the registry.
    pub fn new(admin: &Secret, agent: &Secret, registry: Arc<Registry>) -> TokenAuth {
        TokenAuth {
            digests: std::sync::RwLock::new((digest(admin.expose()), digest(agent.expose()))),
            registry,
            token_devices: AtomicBool::new(false),
            operators: None,
        }
    }

    /// Also admits the named operator tokens of `operators`, each with its role.
    #[must_use]
    pub fn with_operators(self, operators: Arc<OperatorTokens>) -> TokenAuth {
        TokenAuth { operators: Some(operators), ..self }
    }

    /// Sets `acl.token_devices` (at start and on reload): whether devices without a secret of
    /// their own may connect with the shared token alone.
    pub fn set_token_devices(&self, allowed: bool) {
        self.token_devices.store(allowed, Ordering::Relaxed);
    }

    /// Replaces both tokens (configuration reload); sessions already open stay open.
    pub fn set_tokens(&self, admin: &Secret, agent: &Secret) {
        *self.digests.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            (digest(admin.expose()), digest(agent.expose()));
    }

    async fn check(&self, hello: &Hello) -> Result<Principal, ErrorBody> {
        if hello.role == Role::Agent
            && let Some(secret) = &hello.secret
        {
            return self.check_device_secret(hello.id.as_deref(), secret);
        }
        let (admin, agent) = *self.digests.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let given = hello.token.as_deref().map(digest);
        let is_admin = given.is_some_and(|g| bool::from(g.ct_eq(&admin)));
        let is_agent = given.is_some_and(|g| bool::from(g.ct_eq(&agent)));
        match hello.role {
            Role::Operator if is_admin => Ok(Principal::operator()),
            Role::Operator if is_agent => Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "the agent token cannot open an operator session; use the admin token",
            )),
            Role::Agent if is_admin || is_agent => self.enroll(hello).await,
            _ if hello.token.is_none() => Err(ErrorBody::new(AUTH_FAILED, "hello carries no token or secret")),
            _ => match self.operators.as_ref().and_then(|o| o.check(hello.token.as_deref().unwrap_or_default())) {
                Some((name, access)) if hello.role == Role::Operator => {
                    Ok(Principal { access: Some(access), token: Some(name), ..Principal::operator() })
                }
                Some((name, _)) => Err(ErrorBody::new(
                    ErrorCode::Forbidden,
                    format!(
                        "the operator token {name} cannot connect a device; use the agent token or a device secret"
                    ),
                )),
                None => Err(ErrorBody::new(AUTH_FAILED, "token is not valid")),
            },
        }
    }
}

impl Principal {
    /// An operator with full rights (the admin token).
    fn operator() -> Principal {
        Principal { role: Role::Operator, device: None, access: Some(Access::Admin), token: None, issued_secret: None }
    }

    /// The device `device`, with the secret its enrollment issued.
    fn agent(device: DeviceId, issued_secret: Option<String>) -> Principal {
        Principal { role: Role::Agent, device: Some(device), access: None, token: None, issued_secret }
    }
}

impl TokenAuth {
    fn check_device_secret(&self, id: Option<&str>, secret: &str) -> Result<Principal, ErrorBody> {
        let id = id.ok_or_else(|| ErrorBody::new(ErrorCode::BadId, "a hello with a device secret needs the id"))?;
        let device = DeviceId::new(id).map_err(|e| ErrorBody::new(ErrorCode::BadId, e.to_string()))?;
        match self.registry.check_secret(id, secret) {
            Some(Ok(_)) => Ok(Principal::agent(device, None)),
            // One answer for an unknown id, a wrong secret and a revoked device: a hello without
            // valid credentials learns nothing about which ids exist. The log says which it was.
            outcome => {
                let why = match outcome {
                    Some(Err(e)) => e.message,
                    _ if self.registry.get(id).is_none() => "unknown device".to_owned(),
                    _ => "the device has no secret".to_owned(),
                };
                tracing::debug!(agent.id = id, why, "device secret refused");
                Err(ErrorBody::new(AUTH_FAILED, format!("unknown device {id} or wrong secret")))
            }
        }
    }

    /// A device connecting with a shared token: a new id is registered (with a secret when the
    /// agent asked to enroll); a known id is accepted only while it has no secret of its own.
    async fn enroll(&self, hello: &Hello) -> Result<Principal, ErrorBody> {
        let principal = Principal::agent;
        let Some(id) = hello.id.as_deref() else {
            if !hello.enroll {
                return Err(ErrorBody::new(ErrorCode::BadId, "an agent hello needs an id (or enroll: true)"));
            }
            // The server picks the id; retried on the (unlikely) collision.
            let mut last = None;
            for _ in 0..ID_ATTEMPTS {
                let device = generated_id();
                let issued = IssuedSecret::generate();
                match self.registry.add(&device, Some(issued.hash), Default::default()).await {
                    Ok(_) => return Ok(principal(device, Some(issued.secret))),
                    Err(e) if e.code == ErrorCode::DeviceExists => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            return Err(last.unwrap_or_else(|| ErrorBody::new(ErrorCode::Internal, "no free device id")));
        };
        let device = DeviceId::new(id).map_err(|e| ErrorBody::new(ErrorCode::BadId, e.to_string()))?;
        let issued = hello.enroll.then(IssuedSecret::generate);
        let token_devices = self.token_devices.load(Ordering::Relaxed);
        match self.registry.get(id) {
            Some(known) if known.revoked => Err(registry::revoked(id)),
            Some(known) if known.secret_hash.is_some() => Err(id_taken(id)),
            Some(_) if !token_devices => Err(ErrorBody::new(
                ErrorCode::Forbidden,
                format!(
                    "device {id} has no secret of its own and this server admits known devices only by their \
                     secret (acl.token_devices = false): an operator can remove it (orb devices rm {id}) so it \
                     enrolls again, or allow shared-token devices"
                ),
            )),
            None if !token_devices && !hello.enroll => Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "this server admits new devices only by enrollment: send enroll: true and keep the secret the \
                 welcome carries (or an operator sets acl.token_devices = true)",
            )),
            Some(_) => match issued {
                // A v1-registered device upgrading: it gets its secret now.
                Some(s) => {
                    self.registry.set_secret(id, s.hash).await?;
                    Ok(principal(device, Some(s.secret)))
                }
                None => Ok(principal(device, None)),
            },
            None => {
                let hash = issued.as_ref().map(|s| s.hash);
                match self.registry.add(&device, hash, Default::default()).await {
                    Ok(_) => Ok(principal(device, issued.map(|s| s.secret))),
                    Err(e) if e.code == ErrorCode::DeviceExists => Err(id_taken(id)),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

const AUTH_FAILED: ErrorCode = ErrorCode::AuthFailed;

fn id_taken(id: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::IdTaken,
        format!("device {id} is registered with its own secret; connect with that secret, not the agent token"),
    )
}

/// `dev-` and 12 random hex digits.
fn generated_id() -> DeviceId {
    let mut raw = [0u8; 6];
    rand::rng().fill_bytes(&mut raw);
    DeviceId::new(&format!("dev-{}", hex::encode(raw))).unwrap_or_else(|_| unreachable!("generated ids are valid"))
}

impl TokenAuth {
    /// An agent presenting a verified client certificate is the device the certificate names:
    /// its hello's `id` must be that id or absent (`id_mismatch`), and the certificate is its
    /// credential (a token or secret in the hello is not needed, and not looked at). A device
    /// that connects with a certificate is closed to the shared tokens from then on: it is
    /// registered (when new) or kept with a device secret no one knows, so the agent token gets
    /// `id_taken` for it. A revoked device is refused (here for a new registration racing a
    /// revoke, and by the handshake). Operators still need the admin token: a certificate makes
    /// no one an operator.
    async fn check_certificate(&self, hello: &Hello, cert: &ClientCertificate) -> Result<Principal, ErrorBody> {
        let named = cert.identity.as_deref().map_err(|why| {
            tracing::info!(why, "client certificate names no device");
            ErrorBody::new(AUTH_FAILED, why.clone())
        })?;
        let device = DeviceId::new(named).map_err(|e| {
            let named = orb_proto::excerpt(named);
            ErrorBody::new(
                ErrorCode::BadId,
                format!("the client certificate names '{named}', which is not a valid device id: {e}"),
            )
        })?;
        if let Some(id) = hello.id.as_deref()
            && id != device.as_str()
        {
            let id = orb_proto::excerpt(id);
            return Err(ErrorBody::new(
                ErrorCode::IdMismatch,
                format!(
                    "the hello's id '{id}' is not the device the client certificate names ({device}); connect as {device} or without an id"
                ),
            ));
        }
        match self.registry.get(device.as_str()) {
            Some(known) if known.revoked => return Err(registry::revoked(device.as_str())),
            Some(known) if known.secret_hash.is_some() => {}
            Some(_) => self.registry.set_secret(device.as_str(), IssuedSecret::generate().hash).await?,
            None => match self.registry.add(&device, Some(IssuedSecret::generate().hash), Default::default()).await {
                Ok(_) => {}
                // Registered meanwhile by another connection: the handshake checks it.
                Err(e) if e.code == ErrorCode::DeviceExists => {}
                Err(e) => return Err(e),
            },
        }
        Ok(Principal::agent(device, None))
    }
}

impl Authenticator for TokenAuth {
    fn authenticate<'a>(
        &'a self,
        hello: &'a Hello,
    ) -> Pin<Box<dyn Future<Output = Result<Principal, ErrorBody>> + Send + 'a>> {
        Box::pin(self.check(hello))
    }

    fn authenticate_peer<'a>(
        &'a self,
        hello: &'a Hello,
        peer: &'a PeerCredentials,
    ) -> Pin<Box<dyn Future<Output = Result<Principal, ErrorBody>> + Send + 'a>> {
        match &peer.client_cert {
            Some(cert) if hello.role == Role::Agent => Box::pin(self.check_certificate(hello, cert)),
            _ => Box::pin(self.check(hello)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hello(role: Role, token: Option<&str>, id: Option<&str>) -> Hello {
        Hello {
            version: 1,
            role,
            token: token.map(str::to_owned),
            secret: None,
            enroll: false,
            id: id.map(str::to_owned),
            tags: Default::default(),
            commands: vec![],
            schemas: Default::default(),
            agent: None,
            codecs: vec![],
            durable: false,
            will: None,
        }
    }

    async fn auth() -> (TokenAuth, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = orb_store::open(&orb_store::StoreUrl::in_data_dir(dir.path())).await.unwrap();
        let registry = Arc::new(Registry::load(store).await.unwrap());
        (TokenAuth::new(&Secret::new("admin-secret"), &Secret::new("agent-secret"), registry), dir)
    }

    #[tokio::test]
    async fn tokens_map_to_roles() {
        let (a, _dir) = auth().await;
        a.set_token_devices(true);
        assert_eq!(
            a.check(&hello(Role::Operator, Some("admin-secret"), None)).await.unwrap().access,
            Some(Access::Admin)
        );
        let p = a.check(&hello(Role::Agent, Some("agent-secret"), Some("web-1"))).await.unwrap();
        assert_eq!(p.device.unwrap().as_str(), "web-1");
        assert_eq!(p.issued_secret, None, "a v1 agent (no enroll) gets no secret");
    }

    #[tokio::test]
    async fn wrong_or_missing_credentials_are_refused_with_codes() {
        let (a, _dir) = auth().await;
        let code = async |h: Hello| a.check(&h).await.unwrap_err().code;
        assert_eq!(code(hello(Role::Operator, Some("nope"), None)).await, ErrorCode::AuthFailed);
        assert_eq!(code(hello(Role::Operator, None, None)).await, ErrorCode::AuthFailed);
        assert_eq!(code(hello(Role::Operator, Some("agent-secret"), None)).await, ErrorCode::Forbidden);
        assert_eq!(code(hello(Role::Agent, Some("agent-secret"), None)).await, ErrorCode::BadId);
        assert_eq!(code(hello(Role::Agent, Some("agent-secret"), Some("a.b"))).await, ErrorCode::BadId);
    }

    #[tokio::test]
    async fn an_enrolled_id_takes_only_its_secret() {
        let (a, _dir) = auth().await;
        let enroll = Hello { enroll: true, ..hello(Role::Agent, Some("agent-secret"), Some("cam-1")) };
        let secret = a.check(&enroll).await.unwrap().issued_secret.unwrap();
        // The shared tokens no longer connect as cam-1, enrolling or not.
        assert_eq!(a.check(&enroll).await.unwrap_err().code, ErrorCode::IdTaken);
        let admin = hello(Role::Agent, Some("admin-secret"), Some("cam-1"));
        assert_eq!(a.check(&admin).await.unwrap_err().code, ErrorCode::IdTaken);
        let own = Hello { secret: Some(secret.clone()), ..hello(Role::Agent, None, Some("cam-1")) };
        assert_eq!(a.check(&own).await.unwrap().device.unwrap().as_str(), "cam-1");
        let wrong = Hello { secret: Some("0".repeat(64)), ..own.clone() };
        assert_eq!(a.check(&wrong).await.unwrap_err().code, ErrorCode::AuthFailed);
        a.registry.revoke("cam-1").await.unwrap();
        let revoked = a.check(&own).await.unwrap_err();
        let unknown = a.check(&Hello { id: Some("cam-9".into()), ..own.clone() }).await.unwrap_err();
        assert_eq!((revoked.code, unknown.code), (ErrorCode::AuthFailed, ErrorCode::AuthFailed));
        assert!(!revoked.message.contains("revoked"), "nothing revealed to a secret that does not match");
        // Holders of the agent token learn that the id is revoked.
        assert_eq!(a.check(&enroll).await.unwrap_err().code, ErrorCode::Revoked);
    }

    #[tokio::test]
    async fn a_client_certificate_authenticates_the_device_it_names_and_only_that_one() {
        let (a, _dir) = auth().await;
        let cert = |id: Result<&str, &str>| PeerCredentials {
            client_cert: Some(ClientCertificate { identity: id.map(str::to_owned).map_err(str::to_owned) }),
        };
        let cam = cert(Ok("cam-1"));
        // No token, no secret: the certificate is the credential; the id may be left out.
        let p = a.authenticate_peer(&hello(Role::Agent, None, None), &cam).await.unwrap();
        assert_eq!((p.device.unwrap().as_str(), p.access, p.issued_secret), ("cam-1", None, None));
        let p = a.authenticate_peer(&hello(Role::Agent, None, Some("cam-1")), &cam).await.unwrap();
        assert_eq!(p.device.unwrap().as_str(), "cam-1");
        // Claiming another device is refused, even with the agent token.
        let e = a.authenticate_peer(&hello(Role::Agent, Some("agent-secret"), Some("cam-2")), &cam).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::IdMismatch);
        assert!(e.message.contains("cam-1") && e.message.contains("cam-2"), "{}", e.message);
        // A certificate naming something that is not a device id, or nothing.
        let e = a.authenticate_peer(&hello(Role::Agent, None, None), &cert(Ok("a b"))).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::BadId);
        let e = a.authenticate_peer(&hello(Role::Agent, None, None), &cert(Err("names no device"))).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::AuthFailed);
        // Operators are not made by a certificate: the admin token still decides.
        let e = a.authenticate_peer(&hello(Role::Operator, None, None), &cam).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::AuthFailed);
        let op = a.authenticate_peer(&hello(Role::Operator, Some("admin-secret"), None), &cam).await.unwrap();
        assert_eq!(op.access, Some(Access::Admin));
        // Without a certificate, tokens work as before, but not for a device that has used one.
        let none = PeerCredentials::default();
        let enroll = |id: &str| Hello { enroll: true, ..hello(Role::Agent, Some("agent-secret"), Some(id)) };
        assert!(a.authenticate_peer(&enroll("web-1"), &none).await.is_ok());
        let e = a.authenticate_peer(&enroll("cam-1"), &none).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::IdTaken);
        // A device without a secret of its own (registered by an operator, or by a v1 agent where
        // token devices are allowed), once it used a certificate, is closed to the token too.
        a.set_token_devices(true);
        assert!(a.authenticate_peer(&hello(Role::Agent, Some("agent-secret"), Some("v1-1")), &none).await.is_ok());
        a.authenticate_peer(&hello(Role::Agent, None, None), &cert(Ok("v1-1"))).await.unwrap();
        let e = a.authenticate_peer(&hello(Role::Agent, Some("agent-secret"), Some("v1-1")), &none).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::IdTaken);
        a.set_token_devices(false);
        a.registry.revoke("v1-1").await.unwrap();
        let e = a.authenticate_peer(&hello(Role::Agent, None, None), &cert(Ok("v1-1"))).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Revoked);
    }

    #[tokio::test]
    async fn the_shared_token_alone_takes_over_no_device_unless_allowed() {
        let (a, _dir) = auth().await;
        let v1 = hello(Role::Agent, Some("agent-secret"), Some("cam-1"));
        // By default a new device must enroll; one without a secret cannot connect by token.
        assert_eq!(a.check(&v1).await.unwrap_err().code, ErrorCode::Forbidden);
        a.set_token_devices(true);
        assert!(a.check(&v1).await.is_ok(), "allowed: a v1 agent registers without a secret");
        a.set_token_devices(false);
        for h in
            [v1.clone(), Hello { enroll: true, ..v1.clone() }, hello(Role::Agent, Some("admin-secret"), Some("cam-1"))]
        {
            let e = a.check(&h).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::Forbidden, "{h:?}");
            assert!(e.message.contains("orb devices rm cam-1"), "{}", e.message);
        }
        assert!(a.registry.get("cam-1").unwrap().secret_hash.is_none(), "nobody took it over");
        // Enrolling a new id is the way in.
        let enroll = Hello { enroll: true, ..hello(Role::Agent, Some("agent-secret"), Some("cam-2")) };
        assert!(a.check(&enroll).await.unwrap().issued_secret.is_some());
    }

    #[tokio::test]
    async fn enrolling_without_an_id_assigns_one() {
        let (a, _dir) = auth().await;
        let enroll = Hello { enroll: true, ..hello(Role::Agent, Some("agent-secret"), None) };
        let p = a.check(&enroll).await.unwrap();
        let id = p.device.unwrap();
        assert!(id.as_str().starts_with("dev-"), "{id}");
        assert!(a.registry.get(id.as_str()).unwrap().secret_hash.is_some());
    }
}
