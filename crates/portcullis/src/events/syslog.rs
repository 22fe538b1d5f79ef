//! The syslog sink: RFC 5424 messages for SIEMs, over UDP, TCP or a Unix
//! datagram socket (`/dev/log`).
//!
//! Decision rules:
//! - The message is RFC 5424 (formatted by the `fasyslog` crate):
//!   `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG` with MSGID the
//!   reason code, no structured data, and MSG the event's JSON (in the
//!   configured schema), so a SIEM parses one JSON object per message.
//! - Severity follows the action: a refusal the client caused is `warning`
//!   (4); one the upstream or the gateway caused (a 5xx) is `err` (3); a
//!   ban and a detection-only note are `notice` (5); an allowed request
//!   recorded is `info` (6). The facility is configured (`auth` by default).
//! - UDP sends one datagram per message (RFC 5426); TCP frames each with
//!   RFC 6587 octet counting (`LEN SP MSG`), so a newline in a message can
//!   never split it; a Unix socket gets one datagram per message.
//! - Like the webhook, `emit` only pushes to a bounded queue that drops the
//!   oldest (`queue.rs`); the sink's thread sends. A failed send drops the
//!   messages it carried (`cause = "write_error"`, an error logged at most
//!   every 10 s) and the connection is opened again for the next batch.
//!
//! Deployment caveat: UDP gives no delivery guarantee and no error for a
//! message lost on the way; use TCP when every event matters.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fasyslog::format::SyslogContext;
use fasyslog::{Facility, Severity};
use portcullis_policy::{Action, Attribution, SecurityEvent};

use super::EVENTS_DROPPED;
use super::queue::Queue;
use crate::config::{SyslogSink, SyslogTransport};

/// Deadline for connecting and for one write.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Most messages sent per wake-up.
const BATCH: usize = 256;

/// One message waiting: its severity, MSGID and MSG.
#[derive(Debug)]
pub struct Message {
    severity: Severity,
    msgid: &'static str,
    json: String,
}

impl Message {
    /// The message for `event`, whose JSON (in the configured schema) is `json`.
    #[must_use]
    pub fn new(event: &SecurityEvent, json: String) -> Self {
        Self { severity: severity(event), msgid: event.reason, json }
    }
}

/// See the module docs.
pub fn severity(event: &SecurityEvent) -> Severity {
    match (event.action, event.attribution) {
        (Action::Deny, Attribution::Client) => Severity::WARNING,
        (Action::Deny, Attribution::Upstream | Attribution::Gateway) => Severity::ERROR,
        (Action::Ban | Action::Log, _) => Severity::NOTICE,
        (Action::Allow, _) => Severity::INFORMATIONAL,
    }
}

/// The handle `emit` pushes to; closing it (drop) ends the thread.
#[derive(Debug)]
pub struct Syslog {
    queue: Arc<Queue<Message>>,
}

impl Syslog {
    /// Starts the sending thread (the connection is opened by it).
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(config: &SyslogSink) -> std::io::Result<Self> {
        let queue = Arc::new(Queue::new(config.queue, &config.name));
        metrics::counter!(EVENTS_DROPPED, "sink" => config.name.clone(), "cause" => "write_error").increment(0);
        let context = context(config);
        let (config, thread_queue) = (config.clone(), queue.clone());
        std::thread::Builder::new()
            .name("portcullis-syslog".into())
            .spawn(move || run(&config, &context, &thread_queue))?;
        Ok(Self { queue })
    }

    /// Queues one message. Never waits.
    pub fn push(&self, message: Message) {
        self.queue.push(message);
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.queue.close();
    }
}

fn context(config: &SyslogSink) -> SyslogContext {
    let mut context = SyslogContext::new();
    context.appname(config.app_name.clone()).facility(Facility::try_from(config.facility).unwrap_or(Facility::AUTH));
    context
}

/// An open connection to the receiver.
enum Connection {
    Udp(UdpSocket),
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixDatagram),
}

fn resolve(address: &str) -> std::io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = address.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "the address resolves to nothing"));
    }
    Ok(addrs)
}

impl Connection {
    fn open(transport: &SyslogTransport) -> std::io::Result<Self> {
        match transport {
            SyslogTransport::Udp(address) => {
                let target = resolve(address)?[0];
                let local: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
                let socket = UdpSocket::bind(local)?;
                socket.connect(target)?;
                socket.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Self::Udp(socket))
            }
            SyslogTransport::Tcp(address) => {
                let mut last = None;
                for target in resolve(address)? {
                    match TcpStream::connect_timeout(&target, IO_TIMEOUT) {
                        Ok(stream) => {
                            stream.set_write_timeout(Some(IO_TIMEOUT))?;
                            stream.set_nodelay(true)?;
                            return Ok(Self::Tcp(stream));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
            }
            #[cfg(unix)]
            SyslogTransport::Unix(path) => {
                let socket = std::os::unix::net::UnixDatagram::unbound()?;
                socket.connect(path)?;
                socket.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Self::Unix(socket))
            }
            #[cfg(not(unix))]
            SyslogTransport::Unix(_) => Err(std::io::Error::other("Unix sockets need a Unix system")),
        }
    }

    /// Sends formatted messages; how many were sent before an error.
    fn send(&mut self, messages: &[String]) -> Result<(), (usize, std::io::Error)> {
        match self {
            Self::Tcp(stream) => {
                let mut framed = Vec::with_capacity(messages.iter().map(|m| m.len() + 8).sum());
                for message in messages {
                    framed.extend_from_slice(format!("{} ", message.len()).as_bytes());
                    framed.extend_from_slice(message.as_bytes());
                }
                stream.write_all(&framed).and_then(|()| stream.flush()).map_err(|e| (0, e))
            }
            Self::Udp(socket) => {
                for (i, message) in messages.iter().enumerate() {
                    socket.send(message.as_bytes()).map_err(|e| (i, e))?;
                }
                Ok(())
            }
            #[cfg(unix)]
            Self::Unix(socket) => {
                for (i, message) in messages.iter().enumerate() {
                    socket.send(message.as_bytes()).map_err(|e| (i, e))?;
                }
                Ok(())
            }
        }
    }
}

/// The RFC 5424 text of `message`.
fn format(context: &SyslogContext, message: &Message) -> String {
    context.format_rfc5424(message.severity, Some(message.msgid), Vec::new(), Some(&message.json)).to_string()
}

fn run(config: &SyslogSink, context: &SyslogContext, queue: &Queue<Message>) {
    let mut connection: Option<Connection> = None;
    let mut last_error_log: Option<Instant> = None;
    loop {
        let batch = queue.take(BATCH, Duration::ZERO);
        if batch.is_empty() {
            return;
        }
        let formatted: Vec<String> = batch.iter().map(|m| format(context, m)).collect();
        let result = match connection.as_mut() {
            Some(open) => open.send(&formatted),
            None => match Connection::open(&config.transport) {
                Ok(mut open) => {
                    let sent = open.send(&formatted);
                    connection = Some(open);
                    sent
                }
                Err(e) => Err((0, e)),
            },
        };
        if let Err((sent, e)) = result {
            connection = None;
            let lost = (formatted.len() - sent) as u64;
            metrics::counter!(EVENTS_DROPPED, "sink" => config.name.clone(), "cause" => "write_error").increment(lost);
            if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                last_error_log = Some(Instant::now());
                tracing::error!(sink = %config.name, error = %e, lost, "cannot send security events to syslog; they are dropped");
            }
        }
    }
}

/// Sends one event now, without a thread (`events::write_now`).
///
/// # Errors
/// Connecting or sending failed.
pub fn send_now(config: &SyslogSink, event: &SecurityEvent, json: String) -> std::io::Result<()> {
    let message = format(&context(config), &Message::new(event, json));
    Connection::open(&config.transport)?.send(&[message]).map_err(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use portcullis_policy::event::RequestSummary;
    use portcullis_policy::{Denied, Reason};

    use super::*;

    fn event(reason: Reason, action: Action) -> SecurityEvent {
        let summary = RequestSummary {
            request_id: "r",
            client_ip: "192.0.2.1".parse().unwrap(),
            listener: "l",
            method: "GET",
            path: "/",
            route: None,
        };
        let mut e = SecurityEvent::denied(&summary, &Denied::new(reason), SystemTime::now());
        e.action = action;
        e
    }

    #[test]
    fn severity_by_action_and_attribution() {
        assert_eq!(severity(&event(Reason::WafSqli, Action::Deny)), Severity::WARNING);
        assert_eq!(severity(&event(Reason::UpstreamTimeout, Action::Deny)), Severity::ERROR);
        assert_eq!(severity(&event(Reason::WafSqli, Action::Ban)), Severity::NOTICE);
        assert_eq!(severity(&event(Reason::WafSqli, Action::Log)), Severity::NOTICE);
        assert_eq!(severity(&event(Reason::WafSqli, Action::Allow)), Severity::INFORMATIONAL);
    }

    #[test]
    fn rfc5424_shape() {
        let config = SyslogSink {
            name: "s".into(),
            transport: SyslogTransport::Udp("127.0.0.1:1".into()),
            facility: 16,
            app_name: "gate".into(),
            queue: 1,
        };
        let e = event(Reason::WafSqli, Action::Deny);
        let text = format(&context(&config), &Message::new(&e, "{\"a\":1}".into()));
        // local0 (16) * 8 + warning (4) = 132.
        assert!(text.starts_with("<132>1 "), "{text}");
        assert!(text.ends_with(" gate ".to_owned().as_str()) || text.contains(" gate "), "{text}");
        assert!(text.ends_with(" waf.sqli - {\"a\":1}"), "{text}");
    }
}
