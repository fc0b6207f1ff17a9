//! A fake Postgres server on loopback that speaks just enough of the wire protocol to see
//! what a client sends when it logs in, then refuses it; or, as a tarpit, accepts
//! connections and never answers. For tests that check what the worker would hand a
//! tenant's destination database, and what a silent one costs the fleet.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// What one client sent while logging in.
#[derive(Debug, Clone, Default)]
pub struct Login {
    /// Startup parameters: `user`, `database`, `application_name`, `options`, ...
    pub params: HashMap<String, String>,
    /// The cleartext password, if the client sent one.
    pub password: Option<String>,
    /// Whether it asked for TLS first (answered `N`).
    pub asked_tls: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Ask for a cleartext password, record it, refuse the login (SQLSTATE 28P01).
    RecordAndRefuse,
    /// Accept and hold the connection without reading or writing a byte.
    Tarpit,
}

pub struct FakePostgres {
    pub addr: SocketAddr,
    logins: Arc<Mutex<Vec<Login>>>,
    accepted: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakePostgres {
    /// Records every login and refuses it.
    pub async fn start() -> Self {
        Self::with_mode(Mode::RecordAndRefuse).await
    }

    /// Accepts connections and never answers.
    pub async fn tarpit() -> Self {
        Self::with_mode(Mode::Tarpit).await
    }

    async fn with_mode(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let logins = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(0));
        let (l, a) = (logins.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                *a.lock().unwrap() += 1;
                match mode {
                    Mode::Tarpit => held.push(socket),
                    Mode::RecordAndRefuse => {
                        let l = l.clone();
                        tokio::spawn(async move {
                            if let Ok(login) = record_login(socket).await {
                                l.lock().unwrap().push(login);
                            }
                        });
                    }
                }
            }
        });
        Self {
            addr,
            logins,
            accepted,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every login seen so far.
    pub fn logins(&self) -> Vec<Login> {
        self.logins.lock().unwrap().clone()
    }

    /// Connections accepted so far (a tarpit's included).
    pub fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }
}

impl Drop for FakePostgres {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_message(socket: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = socket.read_i32().await?;
    let mut body = vec![0; (len as usize).saturating_sub(4).min(1 << 20)];
    socket.read_exact(&mut body).await?;
    Ok(body)
}

async fn record_login(mut socket: TcpStream) -> std::io::Result<Login> {
    let mut login = Login::default();
    let mut startup = read_message(&mut socket).await?;
    // SSLRequest (80877103): no TLS here.
    if startup.len() == 4 && startup == 80877103i32.to_be_bytes() {
        login.asked_tls = true;
        socket.write_all(b"N").await?;
        startup = read_message(&mut socket).await?;
    }
    let mut fields = startup[4..]
        .split(|&b| b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned());
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        if k.is_empty() {
            break;
        }
        login.params.insert(k, v);
    }
    // AuthenticationCleartextPassword.
    socket.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await?;
    if socket.read_u8().await? == b'p' {
        let body = read_message(&mut socket).await?;
        let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
        login.password = Some(String::from_utf8_lossy(&body[..end]).into_owned());
    }
    let mut error = Vec::new();
    for (code, text) in [
        (b'S', "FATAL"),
        (b'C', "28P01"),
        (b'M', "password authentication failed (fake server)"),
    ] {
        error.push(code);
        error.extend_from_slice(text.as_bytes());
        error.push(0);
    }
    error.push(0);
    let mut msg = vec![b'E'];
    msg.extend_from_slice(&(error.len() as i32 + 4).to_be_bytes());
    msg.extend_from_slice(&error);
    socket.write_all(&msg).await?;
    socket.flush().await?;
    Ok(login)
}
