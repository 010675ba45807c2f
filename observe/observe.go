// Package observe wires helix nodes to Prometheus and serves a node's HTTP endpoints:
// /metrics, /healthz, /readyz and /status. It lives outside the SDK so that importing
// helix does not import Prometheus; the helix binary uses it, and so can applications
// that want the same metrics. Prometheus because its text format is what every metrics
// stack scrapes, and its client brings process and Go runtime metrics for free.
package observe

import (
	"sort"
	"sync"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics implements helix.Observer with Prometheus metrics, and exports each watched
// node's gauges (read from Node.Status when scraped). Every series has a node label, so
// that several nodes in one process (helix dev) stay apart.
type Metrics struct {
	storeLatency *prometheus.HistogramVec
	storeErrors  *prometheus.CounterVec
	starts       *prometheus.CounterVec
	stops        *prometheus.CounterVec
	moves        *prometheus.CounterVec
	handoff      *prometheus.HistogramVec
	events       *prometheus.CounterVec
	sup          *supMetrics // supervise.go

	mu    sync.Mutex
	nodes map[string]*helix.Node
}

var _ helix.Observer = (*Metrics)(nil)

// New creates the metrics and registers them, the node gauges, and the process and Go
// runtime collectors with reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		storeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "helix_store_request_duration_seconds",
			Help:    "Latency of store operations, by operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"node", "op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "helix_store_errors_total",
			Help: "Store operations that failed, by operation and error class (fenced, lease_lost, conflict, node_dead, unavailable, ...); a held lease (a standby's poll) is not counted.",
		}, []string{"node", "op", "class"}),
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "helix_partition_starts_total",
			Help: "Partition handlers started on this node.",
		}, []string{"node"}),
		stops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "helix_partition_stops_total",
			Help: "Partition handlers stopped on this node, by reason (released, self-fenced, node-dead, shutdown, revoked).",
		}, []string{"node", "reason"}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "helix_partition_moves_total",
			Help: "Partitions this node handed off to another node gracefully (stopped on a release request).",
		}, []string{"node"}),
		handoff: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "helix_handoff_duration_seconds",
			Help:    "This node's part of a graceful handoff: from the release request reaching the node to its handler having returned.",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"node"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "helix_events_total",
			Help: "State machine events (became_coordinator, stepped_down, registered, ...), by kind.",
		}, []string{"node", "kind"}),
		nodes: map[string]*helix.Node{},
	}
	reg.MustRegister(m.storeLatency, m.storeErrors, m.starts, m.stops, m.moves, m.handoff, m.events,
		(*gauges)(m),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	m.sup = newSupMetrics(reg, m)
	return m
}

// Watch adds a node whose gauges are exported.
func (m *Metrics) Watch(n *helix.Node) {
	m.mu.Lock()
	m.nodes[n.ID()] = n
	m.mu.Unlock()
}

// StoreCall implements helix.Observer.
func (m *Metrics) StoreCall(node, op string, took time.Duration, err error) {
	m.storeLatency.WithLabelValues(node, op).Observe(took.Seconds())
	// A held lease is a standby's answer to its poll, not a failure: counting it would
	// make an error-rate alert fire on every healthy cluster.
	if class := helix.ErrorClass(err); class != "" && class != "lease_held" {
		m.storeErrors.WithLabelValues(node, op, class).Inc()
	}
}

// PartitionStarted implements helix.Observer.
func (m *Metrics) PartitionStarted(node string, p helix.Partition) {
	m.starts.WithLabelValues(node).Inc()
}

// PartitionStopped implements helix.Observer.
func (m *Metrics) PartitionStopped(node string, p helix.Partition, reason engine.StopReason, took time.Duration) {
	m.stops.WithLabelValues(node, reason.String()).Inc()
	if reason == engine.StopReleased {
		m.moves.WithLabelValues(node).Inc()
		m.handoff.WithLabelValues(node).Observe(took.Seconds())
	}
}

// Event implements helix.Observer.
func (m *Metrics) Event(node string, e engine.Event) {
	m.events.WithLabelValues(node, e.Kind).Inc()
	m.sup.event(node, e)
}

// gauges is the collector of the watched nodes' pulled gauges.
type gauges Metrics

var (
	descCoordinator = prometheus.NewDesc("helix_coordinator", "1 if the node believes it is the coordinator (holds the lease).", []string{"node"}, nil)
	descEpoch       = prometheus.NewDesc("helix_epoch", "The coordinator lease epoch the node last held or saw.", []string{"node"}, nil)
	descOwned       = prometheus.NewDesc("helix_partitions_owned", "Partitions the node owns (processing or releasing).", []string{"node"}, nil)
	descHandlers    = prometheus.NewDesc("helix_partition_handlers", "Partition handlers running.", []string{"node"}, nil)
	descHBAge       = prometheus.NewDesc("helix_heartbeat_age_seconds", "Time since the last successful heartbeat was sent (node clock); absent before the first.", []string{"node"}, nil)
	descRegistered  = prometheus.NewDesc("helix_registered", "1 if the node has an incarnation it believes alive.", []string{"node"}, nil)
	descDraining    = prometheus.NewDesc("helix_draining", "1 if the node is draining.", []string{"node"}, nil)
	descIncarnation = prometheus.NewDesc("helix_incarnation", "The node's current incarnation (0 before registering).", []string{"node"}, nil)
)

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCoordinator, descEpoch, descOwned, descHandlers, descHBAge, descRegistered, descDraining, descIncarnation} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// watched returns the watched nodes sorted by id.
func (g *gauges) watched() []*helix.Node {
	g.mu.Lock()
	ids := make([]string, 0, len(g.nodes))
	for id := range g.nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	nodes := make([]*helix.Node, len(ids))
	for i, id := range ids {
		nodes[i] = g.nodes[id]
	}
	g.mu.Unlock()
	return nodes
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	for _, n := range g.watched() {
		s := n.Status()
		id := n.ID()
		ch <- prometheus.MustNewConstMetric(descCoordinator, prometheus.GaugeValue, b2f(s.Coordinator), id)
		ch <- prometheus.MustNewConstMetric(descEpoch, prometheus.GaugeValue, float64(s.Epoch), id)
		ch <- prometheus.MustNewConstMetric(descOwned, prometheus.GaugeValue, float64(len(s.Owned)), id)
		ch <- prometheus.MustNewConstMetric(descHandlers, prometheus.GaugeValue, float64(s.Handlers), id)
		ch <- prometheus.MustNewConstMetric(descRegistered, prometheus.GaugeValue, b2f(s.Registered), id)
		ch <- prometheus.MustNewConstMetric(descDraining, prometheus.GaugeValue, b2f(s.Draining), id)
		ch <- prometheus.MustNewConstMetric(descIncarnation, prometheus.GaugeValue, float64(s.Incarnation), id)
		if s.HeartbeatAge >= 0 {
			ch <- prometheus.MustNewConstMetric(descHBAge, prometheus.GaugeValue, s.HeartbeatAge.Seconds(), id)
		}
	}
}
