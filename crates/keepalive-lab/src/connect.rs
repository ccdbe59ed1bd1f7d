//! The connect stage: the server listening with the policy (the lab's own, or a program of
//! the user's with the policy injected), then the client connected to it (the lab's own, or
//! a program of the user's).

use crate::client::Client;
use crate::program::Program;
use crate::scenario::{Fault, Scenario};
use crate::server::{ServerSide, ToServer, serve, serve_program};
use crate::topology::{self, Net};
use crate::{LabError, Options, PORT};
use keepalive::Policy;
use std::net::SocketAddrV4;
use std::sync::mpsc;
use std::time::Duration;

/// The programs the user gave for either end, checked before anything is built.
pub(crate) struct Programs {
    server: Option<Program>,
    client: Option<Program>,
}

/// The ends' programs, found and checked against what the scenario needs of each end.
pub(crate) fn programs(
    options: &Options,
    policy: Policy,
    keepalive_on: bool,
) -> Result<Programs, LabError> {
    let scenario = &options.scenario;
    let server = SocketAddrV4::new(topology::server_address(scenario.topology), PORT);
    if options.server_cmd.is_some() && (scenario.send_after_fault || heartbeat(scenario).is_some())
    {
        return Err(LabError::BadInput(format!(
            "--server-cmd runs a program that only waits; scenario '{}' needs the built-in server to send",
            scenario.name
        )));
    }
    if !keepalive_on && policy.user_timeout().is_some() && options.server_cmd.is_some() {
        return Err(LabError::BadInput(
            "--server-cmd with --no-keepalive runs the program untouched: a user timeout needs the built-in server".into(),
        ));
    }
    let inject = keepalive_on.then_some(policy);
    Ok(Programs {
        server: options
            .server_cmd
            .as_deref()
            .map(|cmd| Program::new("--server-cmd", cmd, inject, server))
            .transpose()?,
        client: options
            .client_cmd
            .as_deref()
            .map(|cmd| Program::new("--client-cmd", cmd, None, server))
            .transpose()?,
    })
}

/// The server's application heartbeat (`hung`): interval in milliseconds, and misses.
pub(crate) fn heartbeat(scenario: &Scenario) -> Option<(u64, usize)> {
    if scenario.fault != Fault::Freeze {
        return None;
    }
    scenario
        .heartbeat_ms()
        .map(|ms| (ms, scenario.heartbeat_misses.unwrap_or(3) as usize))
}

/// Both ends, connected.
pub(crate) struct Ends {
    pub(crate) client: Client,
    server: std::thread::JoinHandle<Result<Result<ServerSide, String>, LabError>>,
    commands: mpsc::Sender<ToServer>,
}

impl Ends {
    /// The server's end is over (its connection ended, or its program went).
    pub(crate) fn server_done(&self) -> bool {
        self.server.is_finished()
    }

    /// Tells the built-in server to send `bytes` of data.
    pub(crate) fn server_sends(&self, bytes: usize) {
        let _ = self.commands.send(ToServer::Send(bytes));
    }

    /// Stops the server and returns what it saw; the client is left as it is.
    pub(crate) fn stop_server(self) -> Result<(ServerSide, Client), LabError> {
        let _ = self.commands.send(ToServer::Stop);
        let side = self
            .server
            .join()
            .map_err(|_| LabError::Run("server thread panicked".into()))??
            .map_err(|e| LabError::Run(format!("server: {e}")))?;
        Ok((side, self.client))
    }
}

/// Starts the server in its namespace and, once it listens, connects the client.
pub(crate) fn connect(
    net: &Net,
    scenario: &Scenario,
    policy: Policy,
    keepalive_on: bool,
    programs: Programs,
    start_ns: u128,
) -> Result<Ends, LabError> {
    let server_addr = SocketAddrV4::new(net.server_ip, PORT);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (commands, cmd_rx) = mpsc::channel::<ToServer>();
    let heartbeat = heartbeat(scenario);
    let server_program = programs.server;
    let server = net.server.spawn(move || match server_program {
        Some(program) => serve_program(&program, server_addr, ready_tx, cmd_rx, start_ns),
        None => serve(
            server_addr,
            policy,
            keepalive_on,
            heartbeat,
            ready_tx,
            cmd_rx,
            start_ns,
        ),
    })?;
    // A program's own deadline is 10 s, after which it is named with what it did not do.
    match ready_rx.recv_timeout(Duration::from_secs(15)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(LabError::Run(format!("server: {e}"))),
        Err(_) => return Err(LabError::Run("the server did not start within 15 s".into())),
    }
    let client = match programs.client {
        Some(program) => Client::program(&net.client, server_addr, program)?,
        // For `hung`, the client's program is a process of its own that answers each ping
        // with a pong until the fault stops it (SIGSTOP); its kernel goes on answering TCP.
        None => Client::connect(&net.client, server_addr, heartbeat.is_some())?,
    };
    Ok(Ends {
        client,
        server,
        commands,
    })
}
