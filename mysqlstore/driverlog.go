package mysqlstore

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// SetDriverLogger routes the MySQL driver's own log lines ("closing bad idle
// connection", "unexpected EOF", …), which it otherwise prints unstructured to stderr,
// into l at WARN with component=mysql-driver. It applies to stores opened afterwards
// (the driver's logger is process-wide and read when a DSN is parsed).
func SetDriverLogger(l *slog.Logger) {
	_ = mysql.SetLogger(driverLogger{l.With("component", "mysql-driver")})
}

type driverLogger struct{ l *slog.Logger }

func (d driverLogger) Print(v ...any) {
	d.l.Warn(strings.TrimSpace(fmt.Sprint(v...)))
}
