//! `broker`: parse the command line, install signal handling, run.
#![forbid(unsafe_code)]

use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use broker::config::{
    Cli, Command, CommittedArgs, CreateTopicArgs, DecodeArgs, KafkaUserAddArgs, KafkaUserCommand,
    ResetOffsetsArgs, StatusArgs, TopicsArgs,
};
use clap::Parser;
use control_protocol::{default_id, ConnectError, ControlFrame, OwnerKind, Role, Session};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Status(args)) => status(args),
        Some(Command::Decode(args)) => decode(args),
        Some(Command::Committed(args)) => committed(args),
        Some(Command::ResetOffsets(args)) => reset_offsets(args),
        Some(Command::CreateTopic(args)) => create_topic(args),
        Some(Command::Topics(args)) => topics(args),
        Some(Command::KafkaUser(KafkaUserCommand::Add(args))) => kafka_user_add(args),
        None => serve(cli.serve),
    }
}

fn serve(args: broker::config::ServeArgs) -> ExitCode {
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("broker: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once.
        let registered = signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()));
        if let Err(e) = registered {
            eprintln!("broker: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    }
    let result = broker::run(config, stop, |line| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker: {e}");
            ExitCode::from(1)
        }
    }
}

fn kafka_user_add(args: KafkaUserAddArgs) -> ExitCode {
    use broker::kafka_users::{add, AddError};
    let stdin = std::io::stdin();
    match add(
        &args.kafka_users,
        &args.name,
        args.iterations,
        &mut stdin.lock(),
    ) {
        Ok(said) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Err(AddError::Usage(e)) => {
            eprintln!("broker kafka-user add: {e}");
            ExitCode::from(2)
        }
        Err(AddError::Failed(e)) => {
            eprintln!("broker kafka-user add: {e}");
            ExitCode::from(1)
        }
    }
}

fn status(args: StatusArgs) -> ExitCode {
    let id = args.id.unwrap_or_else(|| default_id(Role::Admin));
    if let Err(e) = shm_layout::names::check_name("id", &id) {
        eprintln!("broker status: {e}");
        return ExitCode::from(2);
    }
    let request = ControlFrame::StatusRequest;
    let json = match ask(&args.address.broker, &id, &request, REPLY_PATIENCE) {
        Ok(ControlFrame::Status { json }) => json,
        other => return unanswered("status", other),
    };
    print_report("status", &json, args.json, broker::status::render_text)
}

fn committed(args: CommittedArgs) -> ExitCode {
    let owner = match (args.id, args.group) {
        (Some(id), _) => Some((OwnerKind::Reader, id)),
        (None, Some(g)) => Some((OwnerKind::Group, g)),
        (None, None) => None,
    };
    if let Some((kind, name)) = &owner {
        if let Err(e) = shm_layout::names::check_name(kind.name(), name) {
            eprintln!("broker committed: {e}");
            return ExitCode::from(2);
        }
    }
    let request = ControlFrame::CommittedRequest { owner };
    let offsets = match ask_admin(&args.address.broker, &request) {
        Ok(ControlFrame::Committed { offsets }) => offsets,
        other => return unanswered("committed", other),
    };
    if args.json {
        println!("{}", broker::committed::to_json(&offsets));
    } else {
        print!("{}", broker::committed::render_text(&offsets));
    }
    ExitCode::SUCCESS
}

fn reset_offsets(args: ResetOffsetsArgs) -> ExitCode {
    if let Err(e) = shm_layout::names::check_name("group name", &args.group) {
        eprintln!("broker reset-offsets: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = shm_layout::names::check_topic(&args.topic) {
        eprintln!("broker reset-offsets: {e}");
        return ExitCode::from(2);
    }
    let reset = ControlFrame::ResetOffsets {
        group: args.group.clone(),
        topic: args.topic.clone(),
        to: args.to,
    };
    match ask_admin(&args.address.broker, &reset) {
        Ok(ControlFrame::ResetDone { offsets }) => {
            match &offsets[..] {
                [offset] if args.topic == "default" => {
                    println!("group {} now at offset {offset}", args.group)
                }
                _ => {
                    for (p, offset) in offsets.iter().enumerate() {
                        println!(
                            "group {} now at offset {offset} in {}/{p}",
                            args.group, args.topic
                        );
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Ok(ControlFrame::ResetRefused { reason }) => {
            eprintln!("broker reset-offsets: {reason}");
            ExitCode::from(1)
        }
        other => unanswered("reset-offsets", other),
    }
}

fn decode(args: DecodeArgs) -> ExitCode {
    let options = match args.validate() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("broker decode: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut warn = |warning: &str| eprintln!("broker decode: {warning}");
    match broker::decode::decode_file(&options, &mut out, &mut warn) {
        Ok(()) => ExitCode::SUCCESS,
        // `| head` has what it wanted.
        Err(e) if e.is_closed_output() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker decode: {e}");
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

fn create_topic(args: CreateTopicArgs) -> ExitCode {
    if let Err(e) = shm_layout::names::check_topic(&args.name) {
        eprintln!("broker create-topic: {e}");
        return ExitCode::from(2);
    }
    if args.partitions == 0 || args.partitions > shm_layout::layout::MAX_RINGS {
        eprintln!(
            "broker create-topic: --partitions must be from 1 to {}",
            shm_layout::layout::MAX_RINGS
        );
        return ExitCode::from(2);
    }
    let Ok(slot_size) = args.slot_size.map(u32::try_from).transpose() else {
        eprintln!("broker create-topic: --slot-size is too large");
        return ExitCode::from(2);
    };
    let create = ControlFrame::CreateTopic {
        name: args.name.clone(),
        partitions: args.partitions,
        slots: args.slots,
        slot_size,
    };
    // Reserving a large topic's memory takes a while: the broker answers once
    // every region is made (or says why not), and stopping ends the connection.
    let id = default_id(Role::Admin);
    match ask(&args.address.broker, &id, &create, CREATE_PATIENCE) {
        Ok(ControlFrame::TopicCreated(info)) => {
            println!(
                "created topic {} with {} partitions",
                info.name, info.partitions
            );
            ExitCode::SUCCESS
        }
        Ok(ControlFrame::CreateRefused { reason, .. }) => {
            eprintln!("broker create-topic: {reason}");
            ExitCode::from(1)
        }
        other => unanswered("create-topic", other),
    }
}

fn topics(args: TopicsArgs) -> ExitCode {
    let json = match ask_admin(&args.address.broker, &ControlFrame::TopicsRequest) {
        Ok(ControlFrame::Topics { json }) => json,
        other => return unanswered("topics", other),
    };
    print_report(
        "topics",
        &json,
        args.json,
        broker::topics_report::render_text,
    )
}

/// How long a subcommand waits for the broker's answer.
const REPLY_PATIENCE: std::time::Duration = control_protocol::client::HANDSHAKE_TIMEOUT;
/// How long `create-topic` waits: as long as a large topic's creation takes.
const CREATE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Registers with the broker at `broker` as admin `id` and sends `request`; its
/// answer, waited for at most `patience`.
fn ask(
    broker: &str,
    id: &str,
    request: &ControlFrame,
    patience: std::time::Duration,
) -> Result<ControlFrame, ConnectError> {
    Session::connect(broker, Role::Admin, id, None)
        .and_then(|s| s.request_within(request, patience))
}

/// [`ask`] as an admin with the default id.
fn ask_admin(broker: &str, request: &ControlFrame) -> Result<ControlFrame, ConnectError> {
    ask(broker, &default_id(Role::Admin), request, REPLY_PATIENCE)
}

/// A subcommand's request got no answer it expected: one line why, exit 1.
fn unanswered(command: &str, reply: Result<ControlFrame, ConnectError>) -> ExitCode {
    match reply {
        Ok(other) => eprintln!("broker {command}: unexpected reply {other:?}"),
        Err(e) => eprintln!("broker {command}: {e}"),
    }
    ExitCode::from(1)
}

/// Prints a JSON report as it is (`--json`) or as `render` lays it out.
fn print_report(
    command: &str,
    json: &str,
    as_json: bool,
    render: fn(&serde_json::Value) -> String,
) -> ExitCode {
    if as_json {
        println!("{json}");
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(v) => {
            print!("{}", render(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("broker {command}: malformed report: {e}");
            ExitCode::from(1)
        }
    }
}
