//! `mosixd --metrics ADDR`: the daemon's figures for operators, in Prometheus's text format,
//! on `GET /metrics` (docs/metrics.md lists each metric).
//!
//! Most figures are read when a scraper asks: the gauge's last reading, the cluster view,
//! the table of supervised processes, the guests, the view's counters. What only events say
//! is counted here as they happen ([`Metrics`]): what the supervisors tally (their moves,
//! image sizes, freeze times and forwarded calls; see `rmosix_wire::Tally`) and the guests
//! that came and went.
//!
//! The listener is off unless asked for, and takes what anyone on the network may send: a
//! request must come whole within [`REQUEST_TIMEOUT`] and fit [`MAX_REQUEST`] bytes, a
//! connection ends after one answer or [`CONNECTION_TIMEOUT`], and at most [`MAX_SCRAPERS`]
//! are served at once (others are closed at once). HTTP is hyper's: a parser that thousands of
//! servers expose to the internet is safer than one written for this module.

use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use rmosix_view::Counters;
use rmosix_wire::{
    Buckets, Departure, FORWARDED_US_BOUNDS, FREEZE_US_BOUNDS, IMAGE_BYTES_BOUNDS, Liveness,
    MoveKind, MoveOutcome, NodeFigures, Tally,
};

use crate::cluster;
use crate::daemon::Shared;

/// How long a scraper may take to send its request line and headers.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may last in all, answer included. A scrape of the largest map is
/// a few megabytes: seconds even over a slow link.
pub(crate) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request, request line and headers: hyper's smallest buffer. A scraper's request is
/// a few hundred bytes.
pub(crate) const MAX_REQUEST: usize = 8192;
/// Connections served at once. Prometheus scrapes one at a time per target; a few operators
/// with curl on top fit too.
pub(crate) const MAX_SCRAPERS: usize = 8;
/// After a failed accept (out of fds, most likely), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Prometheus's classic text format (what the body is, and what curl gets).
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// OpenMetrics, which the body is too, for the scrapers that ask for it (Prometheus does).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the daemon counts as it happens, for the scrapes. Counted whether or not anyone
/// scrapes: a few additions per move or per supervisor tally.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// What the supervisors of this node tallied, added up.
    tally: Mutex<Tally>,
    /// Tallies that did not fit this build's buckets.
    rejected: AtomicU64,
    /// Processes of other nodes that arrived here.
    arrived: AtomicU64,
    /// Processes of other nodes that left, by [`Departure`] (ended, moved, lost).
    departed: [AtomicU64; 3],
}

impl Metrics {
    /// Add a supervisor's tally; false if it does not fit (counted as rejected).
    pub fn add_tally(&self, tally: &Tally) -> bool {
        let added = self
            .tally
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .add(tally);
        if !added {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        added
    }

    /// A process of another node runs here now.
    pub fn guest_arrived(&self) {
        self.arrived.fetch_add(1, Ordering::Relaxed);
    }

    /// A process of another node left.
    pub fn guest_left(&self, how: Departure) {
        self.departed[departure_index(how)].fetch_add(1, Ordering::Relaxed);
    }
}

fn departure_index(how: Departure) -> usize {
    match how {
        Departure::Ended => 0,
        Departure::Moved => 1,
        Departure::Lost => 2,
    }
}

const DEPARTURES: [(Departure, &str); 3] = [
    (Departure::Ended, "ended"),
    (Departure::Moved, "moved"),
    (Departure::Lost, "lost"),
];

/// The figures of one scrape, taken at once.
#[derive(Debug, Default)]
struct Snapshot {
    /// This node's number.
    node: u16,
    /// The gauge's last reading of this node.
    own: NodeFigures,
    /// Every node of the map as the view has it: number, liveness, load (if it has one).
    nodes: Vec<(u16, Liveness, Option<u32>)>,
    /// Supervised processes at home and away.
    home: usize,
    away: usize,
    /// Processes of other nodes that run here.
    guests: usize,
    blocked: bool,
    tally: Tally,
    rejected: u64,
    arrived: u64,
    departed: [u64; 3],
    gossip: Counters,
}

impl Snapshot {
    fn take(shared: &Shared) -> Snapshot {
        let own = cluster::figures(&shared.cluster.state(shared.modes()));
        let nodes = cluster::every_node(shared)
            .into_iter()
            .map(|n| (n.node, n.liveness, n.figures.map(|f| f.load)))
            .collect();
        let (all, away) = {
            let table = shared.table();
            (table.process_count(), table.away().len())
        };
        let home = all.saturating_sub(away);
        let metrics = &shared.metrics;
        Snapshot {
            node: shared.own.get(),
            own,
            nodes,
            home,
            away,
            guests: shared.hosted().count(),
            blocked: shared.is_blocked(),
            tally: metrics
                .tally
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            rejected: metrics.rejected.load(Ordering::Relaxed),
            arrived: metrics.arrived.load(Ordering::Relaxed),
            departed: metrics
                .departed
                .each_ref()
                .map(|n| n.load(Ordering::Relaxed)),
            gossip: shared.cluster.counters(),
        }
    }

    /// The snapshot in the text format (the OpenMetrics flavour, which the classic parser
    /// reads too: `# UNIT` and `# EOF` are comments to it).
    fn render(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        // Writing to a String cannot fail, and every figure encodes.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            warn!("cannot encode the metrics: {e}");
        }
        text
    }
}

/// One metric at a time into the scrape.
struct Out<'a, 'b>(&'a mut DescriptorEncoder<'b>);

impl Out<'_, '_> {
    fn gauge(&mut self, name: &str, help: &str, value: impl EncodeGaugeValue) -> fmt::Result {
        self.0
            .encode_descriptor(name, help, None, MetricType::Gauge)?
            .encode_gauge(&value)
    }

    /// A gauge with one sample per label set.
    fn gauges<V: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, V)>,
    ) -> fmt::Result {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in samples {
            family.encode_family(&labels)?.encode_gauge(&value)?;
        }
        Ok(())
    }

    /// A counter (`name` without its `_total`, which the encoder adds) with one sample per
    /// label set.
    fn counters(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, u64)>,
    ) -> fmt::Result {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in samples {
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        Ok(())
    }

    /// A histogram of `buckets` over `bounds`, each value (and bound) times `scale`.
    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        (buckets, bounds, scale): (&Buckets, &[u64], f64),
    ) -> fmt::Result {
        let counts = |i: usize| buckets.counts.get(i).copied().unwrap_or(0);
        let les: Vec<(f64, u64)> = bounds
            .iter()
            .map(|&b| b as f64 * scale)
            .chain([f64::INFINITY])
            .enumerate()
            .map(|(i, le)| (le, counts(i)))
            .collect();
        self.0
            .encode_descriptor(name, help, None, MetricType::Histogram)?
            .encode_histogram::<NoLabelSet>(buckets.sum as f64 * scale, buckets.count(), &les, None)
    }
}

fn label(key: &'static str, value: impl ToString) -> (&'static str, String) {
    (key, value.to_string())
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut out = Out(&mut encoder);
        let own = &self.own;
        out.gauge(
            "mosix_node_id",
            "This node's number in the map.",
            u32::from(self.node),
        )?;
        out.gauge(
            "mosix_load",
            "This node's load as its gauge measures it (100 is one CPU-busy process on a standard CPU).",
            own.load,
        )?;
        out.gauge(
            "mosix_speed",
            "This node's CPU speed (10000 is a standard CPU).",
            own.speed,
        )?;
        out.gauge(
            "mosix_cpus",
            "CPUs this node's processes may use.",
            f64::from(own.milli_cpus) / 1000.0,
        )?;
        out.gauge(
            "mosix_memory_total_bytes",
            "Memory this node's processes may use.",
            own.mem_total,
        )?;
        out.gauge("mosix_memory_free_bytes", "Of which free.", own.mem_free)?;
        out.gauge(
            "mosix_cpu_utilisation_ratio",
            "This node's CPU utilisation, 0 to 1.",
            f64::from(own.utilisation_pct) / 100.0,
        )?;
        out.gauge(
            "mosix_blocked",
            "1 while this node refuses new guests (mosctl block or expel).",
            u32::from(self.blocked),
        )?;
        out.gauges(
            "mosix_node_up",
            "1 if the cluster view has the node up, 0 if suspect or dead.",
            self.nodes
                .iter()
                .map(|&(n, l, _)| (vec![label("node", n)], u32::from(l == Liveness::Up))),
        )?;
        out.gauges(
            "mosix_node_suspect",
            "1 if the node missed a probe and is declared dead unless it answers soon.",
            self.nodes
                .iter()
                .map(|&(n, l, _)| (vec![label("node", n)], u32::from(l == Liveness::Suspect))),
        )?;
        out.gauges(
            "mosix_node_load",
            "Each node's load as the cluster view has it; none for a dead node.",
            self.nodes
                .iter()
                .filter(|&&(_, l, _)| l != Liveness::Dead)
                .filter_map(|&(n, _, load)| Some((vec![label("node", n)], load?))),
        )?;
        out.gauges(
            "mosix_processes",
            "Processes of this node's jobs under mosrun, by where they run (home or away).",
            [
                (vec![label("where", "home")], self.home),
                (vec![label("where", "away")], self.away),
            ],
        )?;
        out.gauge(
            "mosix_guests",
            "Processes of other nodes that run here.",
            self.guests,
        )?;
        let tally = &self.tally;
        let mut moves = Vec::new();
        for kind in MoveKind::ALL {
            for outcome in MoveOutcome::ALL {
                let labels = vec![label("kind", kind.name()), label("outcome", outcome.name())];
                moves.push((labels, tally.moves(kind, outcome)));
            }
        }
        moves.push((
            vec![label("kind", "in"), label("outcome", "done")],
            self.arrived,
        ));
        out.counters(
            "mosix_moves",
            "Moves of this node's processes (out, home, on) by outcome, and of other nodes' processes arriving here (in).",
            moves,
        )?;
        out.counters(
            "mosix_guest_departures",
            "Processes of other nodes that left this node, by how (ended, moved, lost).",
            DEPARTURES.iter().map(|&(how, name)| {
                (
                    vec![label("how", name)],
                    self.departed[departure_index(how)],
                )
            }),
        )?;
        out.histogram(
            "mosix_move_image_bytes",
            "Bytes of the pages of the image of each move out or on that was done.",
            (&tally.image_bytes, &IMAGE_BYTES_BOUNDS, 1.0),
        )?;
        out.histogram(
            "mosix_move_freeze_seconds",
            "How long each move that was done kept its process frozen.",
            (&tally.freeze_us, &FREEZE_US_BOUNDS, 1e-6),
        )?;
        out.histogram(
            "mosix_forwarded_call_seconds",
            "How long home took to answer each forwarded call, from its arrival to its answer.",
            (&tally.forwarded_us, &FORWARDED_US_BOUNDS, 1e-6),
        )?;
        out.counters(
            "mosix_tallies_rejected",
            "Supervisor tallies that did not fit this daemon's buckets (another build).",
            [(vec![], self.rejected)],
        )?;
        let g = &self.gossip;
        out.counters(
            "mosix_gossip_datagrams_sent",
            "Gossip datagrams this node sent.",
            [(vec![], g.sent)],
        )?;
        out.counters(
            "mosix_gossip_datagrams_received",
            "Gossip datagrams received, by what became of them: accepted, or dropped and why.",
            [
                ("accepted", g.accepted),
                ("malformed", g.malformed),
                ("unknown_source", g.unknown_source),
                ("wrong_sender", g.wrong_sender),
                ("bad_seal", g.bad_seal),
                ("replayed", g.replayed),
            ]
            .map(|(result, n)| (vec![label("result", result)], n)),
        )
    }
}

/// Serve scrapes on `listener` for as long as the daemon serves.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let scrapers = Arc::new(Semaphore::new(MAX_SCRAPERS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("cannot accept a scraper: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = scrapers.clone().try_acquire_owned() else {
            debug!(%peer, "scraper refused: {MAX_SCRAPERS} are served already");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let answer = respond(&shared, &request);
                async move { Ok::<_, Infallible>(answer) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .max_buf_size(MAX_REQUEST)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, "scrape failed: {e}"),
                Err(_) => debug!(%peer, "scrape took too long"),
            }
            drop(permit);
        });
    }
}

/// The answer to one request: the metrics for `GET /metrics`, else an error.
fn respond(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found; try /metrics\n");
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut answer = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        answer
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return answer;
    }
    let body = Snapshot::take(shared).render();
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    answer.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(content_type(request.headers().get(ACCEPT))),
    );
    answer
}

/// OpenMetrics if the scraper accepts it, else the classic text format.
fn content_type(accept: Option<&HeaderValue>) -> &'static str {
    let wants_openmetrics = accept
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if wants_openmetrics { OPENMETRICS } else { TEXT }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut answer = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmosix_wire::MoveError;

    fn snapshot() -> Snapshot {
        let mut tally = Tally::default();
        tally.count_move(MoveKind::Out, &Ok(()));
        tally.count_move(MoveKind::Home, &Err(MoveError::Busy));
        tally.count_bytes(300 << 10);
        tally.count_freeze(3_000);
        tally.count_freeze(40_000_000);
        Snapshot {
            node: 1,
            own: NodeFigures {
                load: 150,
                speed: 10000,
                milli_cpus: 2500,
                mem_total: 8 << 30,
                mem_free: 1 << 30,
                utilisation_pct: 75,
                ..NodeFigures::default()
            },
            nodes: vec![
                (1, Liveness::Up, Some(150)),
                (2, Liveness::Suspect, Some(20)),
                (3, Liveness::Dead, None),
            ],
            home: 2,
            away: 1,
            guests: 4,
            blocked: true,
            tally,
            rejected: 0,
            arrived: 5,
            departed: [1, 2, 3],
            gossip: Counters {
                sent: 10,
                accepted: 9,
                bad_seal: 2,
                ..Counters::default()
            },
        }
    }

    /// The value of the sample that is `line`'s first word.
    fn sample(text: &str, name: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn a_scrape_has_every_figure() {
        let text = snapshot().render();
        let expected = [
            ("mosix_node_id", 1.0),
            ("mosix_load", 150.0),
            ("mosix_cpus", 2.5),
            ("mosix_memory_total_bytes", 8.0 * 1024.0 * 1024.0 * 1024.0),
            ("mosix_cpu_utilisation_ratio", 0.75),
            ("mosix_blocked", 1.0),
            ("mosix_node_up{node=\"1\"}", 1.0),
            ("mosix_node_up{node=\"2\"}", 0.0),
            ("mosix_node_suspect{node=\"2\"}", 1.0),
            ("mosix_node_load{node=\"2\"}", 20.0),
            ("mosix_processes{where=\"away\"}", 1.0),
            ("mosix_guests", 4.0),
            ("mosix_moves_total{kind=\"out\",outcome=\"done\"}", 1.0),
            ("mosix_moves_total{kind=\"home\",outcome=\"refused\"}", 1.0),
            ("mosix_moves_total{kind=\"on\",outcome=\"failed\"}", 0.0),
            ("mosix_moves_total{kind=\"in\",outcome=\"done\"}", 5.0),
            ("mosix_guest_departures_total{how=\"lost\"}", 3.0),
            ("mosix_move_image_bytes_count", 1.0),
            ("mosix_move_image_bytes_bucket{le=\"262144.0\"}", 0.0),
            ("mosix_move_image_bytes_bucket{le=\"1048576.0\"}", 1.0),
            ("mosix_move_freeze_seconds_count", 2.0),
            ("mosix_move_freeze_seconds_bucket{le=\"0.005\"}", 1.0),
            ("mosix_move_freeze_seconds_bucket{le=\"+Inf\"}", 2.0),
            ("mosix_move_freeze_seconds_sum", 40.003),
            ("mosix_forwarded_call_seconds_count", 0.0),
            ("mosix_forwarded_call_seconds_bucket{le=\"+Inf\"}", 0.0),
            ("mosix_gossip_datagrams_sent_total", 10.0),
            (
                "mosix_gossip_datagrams_received_total{result=\"bad_seal\"}",
                2.0,
            ),
        ];
        for (name, value) in expected {
            let got = sample(&text, name);
            assert!((got - value).abs() < 1e-9, "{name}: {got} != {value}");
        }
        // A dead node has no load to show.
        assert!(!text.contains("mosix_node_load{node=\"3\"}"));
        assert!(text.contains("# TYPE mosix_move_freeze_seconds histogram"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn scrapers_that_ask_for_openmetrics_get_it() {
        let prometheus = HeaderValue::from_static(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        );
        assert_eq!(content_type(Some(&prometheus)), OPENMETRICS);
        assert_eq!(content_type(Some(&HeaderValue::from_static("*/*"))), TEXT);
        assert_eq!(content_type(None), TEXT);
    }

    #[test]
    fn tallies_of_another_build_are_counted_apart() {
        let metrics = Metrics::default();
        let mut tally = Tally::default();
        tally.count_freeze(1);
        assert!(metrics.add_tally(&tally));
        tally.freeze_us.counts.push(0);
        assert!(!metrics.add_tally(&tally));
        assert_eq!(metrics.rejected.load(Ordering::Relaxed), 1);
        metrics.guest_arrived();
        metrics.guest_left(Departure::Moved);
        assert_eq!(metrics.arrived.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.departed[1].load(Ordering::Relaxed), 1);
    }
}
