package sim

import (
	"fmt"
	"html"
	"io"
	"strings"
	"time"
)

// Timeline is what a run recorded for its HTML page: one sample per virtual second,
// the faults as bands, and any violation.
type Timeline struct {
	Scenario   string
	Seed       uint64
	End        time.Duration
	Nodes      []string
	Samples    []Sample
	Faults     []Band
	Violations []Mark
}

// Sample is the cluster at one instant: who leads (and at which epoch), and how many
// partitions each node processes (-1: the process is down).
type Sample struct {
	At          time.Duration
	Coordinator string
	Epoch       uint64
	Counts      []int32 // by node index; shorter than Nodes if nodes joined later
}

// Band is a fault or operator action over [From, To); To < 0 means until the end.
type Band struct {
	From, To time.Duration
	Kind     string
	Target   string
}

// Mark is a violation at an instant.
type Mark struct {
	At        time.Duration
	Invariant string
	Message   string
}

var bandColors = map[string]string{
	"crash": "#d62728", "pause": "#ff7f0e", "partition": "#9467bd", "clock": "#8c564b",
	"store outage": "#e377c2", "latency spike": "#bcbd22", "message loss": "#17becf",
	"drain": "#7f7f7f", "undrain": "#7f7f7f", "join": "#2ca02c", "leave": "#1f77b4",
	"put tasklist": "#aec7e8", "delete tasklist": "#ffbb78",
}

// WriteHTML writes a self-contained page (inline SVG and CSS, no scripts, no external
// resources) showing the timeline. The markup is well-formed XML, so it can be checked
// by a parser as well as opened in a browser.
func (t *Timeline) WriteHTML(w io.Writer) error {
	const (
		left   = 110.0
		width  = 1000.0
		rowH   = 14.0
		laneH  = 18.0
		topPad = 30.0
	)
	end := t.End
	if end <= 0 {
		end = time.Second
	}
	x := func(d time.Duration) float64 { return left + width*float64(d)/float64(end) }
	esc := html.EscapeString
	maxNodes := min(len(t.Nodes), 300) // beyond that the page is unreadable anyway
	faultLanes := map[string]int{}
	var laneNames []string
	for _, b := range t.Faults {
		if _, ok := faultLanes[b.Kind]; !ok {
			faultLanes[b.Kind] = len(laneNames)
			laneNames = append(laneNames, b.Kind)
		}
	}
	coordY := topPad
	faultY := coordY + laneH + 10
	nodesY := faultY + float64(len(laneNames))*laneH + 10
	height := nodesY + float64(maxNodes)*rowH + 30
	maxCount := int32(1)
	for _, s := range t.Samples {
		for _, c := range s.Counts {
			maxCount = max(maxCount, c)
		}
	}

	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n")
	p("<title>helix sim: %s seed %d</title>\n", esc(t.Scenario), t.Seed)
	p("<style>body{font-family:sans-serif;margin:16px} text{font-size:11px} .axis text{fill:#555} .legend span{display:inline-block;margin-right:12px} .sw{display:inline-block;width:10px;height:10px;margin-right:4px}</style>\n")
	p("</head>\n<body>\n<h1>%s, seed %d</h1>\n", esc(t.Scenario), t.Seed)
	p("<p>Virtual time 0–%s. Top lane: the coordinator (colour per node, epoch in the label). Then one lane per fault kind. Then one row per node: darker = more partitions processed, grey = process down.</p>\n", end)
	if len(t.Violations) > 0 {
		for _, v := range t.Violations {
			p("<p class=\"violation-text\" style=\"color:#c00\"><b>%s</b> at %s: %s</p>\n", esc(v.Invariant), v.At, esc(v.Message))
		}
	} else {
		p("<p class=\"ok\">No violation.</p>\n")
	}
	p("<div class=\"legend\">")
	for _, k := range laneNames {
		p("<span><i class=\"sw\" style=\"background:%s\"></i>%s</span>", color(k), esc(k))
	}
	p("</div>\n")
	p("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n", left+width+20, height, left+width+20, height)

	// Axis: a tick every 10% of the run.
	p("<g class=\"axis\">\n")
	for i := 0; i <= 10; i++ {
		d := end * time.Duration(i) / 10
		p("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", x(d), topPad-5, x(d), height-20)
		p("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x(d), height-6, d.Round(time.Second))
	}
	p("</g>\n")

	// Coordinator lane: merge consecutive samples with the same leader and epoch.
	p("<g class=\"coordinator\">\n<text x=\"4\" y=\"%.1f\">coordinator</text>\n", coordY+12)
	for i := 0; i < len(t.Samples); {
		j := i
		for j+1 < len(t.Samples) && t.Samples[j+1].Coordinator == t.Samples[i].Coordinator && t.Samples[j+1].Epoch == t.Samples[i].Epoch {
			j++
		}
		s := t.Samples[i]
		to := end
		if j+1 < len(t.Samples) {
			to = t.Samples[j+1].At
		}
		if s.Coordinator != "" {
			p("<rect class=\"coord\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%s epoch %d, %s–%s</title></rect>",
				x(s.At), coordY, max(x(to)-x(s.At), 0.5), laneH-4, nodeColor(s.Coordinator), esc(s.Coordinator), s.Epoch, s.At, to)
			if x(to)-x(s.At) > 40 {
				p("<text x=\"%.1f\" y=\"%.1f\" fill=\"#fff\">%s e%d</text>", x(s.At)+3, coordY+11, esc(s.Coordinator), s.Epoch)
			}
			p("\n")
		}
		i = j + 1
	}
	p("</g>\n")

	// Fault lanes; each band is also shaded faintly across the node rows.
	p("<g class=\"faults\">\n")
	for i, k := range laneNames {
		p("<text x=\"4\" y=\"%.1f\">%s</text>\n", faultY+float64(i)*laneH+12, esc(k))
	}
	for _, f := range t.Faults {
		to := f.To
		if to < 0 || to > end {
			to = end
		}
		w := max(x(to)-x(f.From), 2)
		y := faultY + float64(faultLanes[f.Kind])*laneH
		p("<rect class=\"fault\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" opacity=\"0.8\"><title>%s %s, %s–%s</title></rect>\n",
			x(f.From), y, w, laneH-4, color(f.Kind), esc(f.Kind), esc(f.Target), f.From, to)
		p("<rect class=\"fault-shade\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" opacity=\"0.08\"/>\n",
			x(f.From), nodesY, w, float64(maxNodes)*rowH, color(f.Kind))
	}
	p("</g>\n")

	// Node rows.
	p("<g class=\"nodes\">\n")
	for n := 0; n < maxNodes; n++ {
		y := nodesY + float64(n)*rowH
		p("<g class=\"node-row\"><text x=\"4\" y=\"%.1f\">%s</text>", y+10, esc(t.Nodes[n]))
		for i := 0; i < len(t.Samples); {
			c := count(t.Samples[i], n)
			j := i
			for j+1 < len(t.Samples) && count(t.Samples[j+1], n) == c {
				j++
			}
			from := t.Samples[i].At
			to := end
			if j+1 < len(t.Samples) {
				to = t.Samples[j+1].At
			}
			if c != 0 && c != -2 {
				fill := "#bbb"
				label := "down"
				if c > 0 {
					fill = fmt.Sprintf("rgb(%d,%d,255)", 230-int(200*c/maxCount), 240-int(190*c/maxCount))
					label = fmt.Sprintf("%d partitions", c)
				}
				p("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%s: %s, %s–%s</title></rect>",
					x(from), y, max(x(to)-x(from), 0.5), rowH-2, fill, esc(t.Nodes[n]), label, from, to)
			}
			i = j + 1
		}
		p("</g>\n")
	}
	p("</g>\n")

	p("<g class=\"violations\">\n")
	for _, v := range t.Violations {
		p("<line class=\"violation\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#c00\" stroke-width=\"2\"><title>%s: %s</title></line>", x(v.At), topPad-10, x(v.At), height-20, esc(v.Invariant), esc(v.Message))
		p("<text x=\"%.1f\" y=\"%.1f\" fill=\"#c00\">%s</text>\n", x(v.At)+3, topPad-12, esc(v.Invariant))
	}
	p("</g>\n</svg>\n")
	if len(t.Nodes) > maxNodes {
		p("<p>%d more nodes not shown.</p>\n", len(t.Nodes)-maxNodes)
	}
	p("</body>\n</html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// count is node n's partition count in a sample; -2 when the node did not exist yet.
func count(s Sample, n int) int32 {
	if n >= len(s.Counts) {
		return -2
	}
	return s.Counts[n]
}

func color(kind string) string {
	if c, ok := bandColors[kind]; ok {
		return c
	}
	return "#999"
}

// nodeColor is a stable colour per node id.
func nodeColor(id string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return fmt.Sprintf("hsl(%d,60%%,40%%)", h%360)
}
