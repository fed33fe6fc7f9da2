package kinesis

import (
	"fmt"
	"runtime"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
	kcllogger "github.com/vmware/vmware-go-kcl-v2/logger"

	"github.com/dapr/kit/logger"
)

// kclLog bridges KCL's logger to the Dapr logger. KCL is chatty at Info (client setup, every shard
// sync) and reports routine events at Error (a lease another worker holds, a shard being stolen, the
// stop of its own worker), so levels are adjusted by message; see kclLevel.
type kclLog struct {
	log logger.Logger
}

var _ kcllogger.Logger = kclLog{}

func (l kclLog) Debugf(format string, args ...any) { l.emit(logrus.DebugLevel, format, args) }
func (l kclLog) Infof(format string, args ...any)  { l.emit(logrus.InfoLevel, format, args) }
func (l kclLog) Warnf(format string, args ...any)  { l.emit(logrus.WarnLevel, format, args) }
func (l kclLog) Errorf(format string, args ...any) { l.emit(logrus.ErrorLevel, format, args) }

// Fatalf must not end daprd: KCL calls it only when it builds its own AWS clients, which this
// binding never lets it do.
func (l kclLog) Fatalf(format string, args ...any) { l.emit(logrus.ErrorLevel, format, args) }

// Panicf keeps KCL's contract (it does not expect control back).
func (l kclLog) Panicf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Errorf("KCL: %s", msg)
	panic(msg)
}

func (l kclLog) WithFields(fields kcllogger.Fields) kcllogger.Logger {
	return kclLog{log: l.log.WithFields(fields)}
}

func (l kclLog) emit(level logrus.Level, format string, args []any) {
	msg := fmt.Sprintf(format, args...)
	level = kclLevel(level, format, msg)
	if l.log.IsOutputLevelEnabled(daprLevel(level)) {
		logAt(l.log, level, "KCL: "+msg)
	}
}

// Messages KCL logs at Info that an operator wants: lease changes and shards read to their end. The
// rest of its Info output (client setup, shard syncs, one line per shard found) goes to Debug.
var kclInfoMessages = []string{
	"Start polling shard consumer", "Start enhanced fan-out shard consumer", "Release lease for shard",
	"Shard %s closed", "Shard %v closed",
}

// Errors KCL reports that are routine: another worker holds or claims the lease, the consumer is
// stopping, balancing found nothing to do.
var kclRoutineErrors = []string{
	errConsumerStopping.Error(), "shard is already claimed by another node", "Error in rebalance",
	"lease not acquired", "AssignedToNotFoundForShard", "context canceled",
	// Failed subscriptions are retried with backoff and logged once per episode by the fan-out guard.
	"operation error Kinesis: SubscribeToShard",
}

// kclLevel is the level a KCL message is logged at. Info messages are recognised by their format;
// routine errors by the formatted message, since the error KCL reports is an argument.
func kclLevel(level logrus.Level, format, msg string) logrus.Level {
	switch level {
	case logrus.InfoLevel:
		for _, m := range kclInfoMessages {
			if strings.HasPrefix(format, m) {
				return logrus.InfoLevel
			}
		}
		return logrus.DebugLevel
	case logrus.WarnLevel, logrus.ErrorLevel:
		for _, m := range kclRoutineErrors {
			if strings.Contains(msg, m) {
				return logrus.DebugLevel
			}
		}
	}
	return level
}

func daprLevel(level logrus.Level) logger.LogLevel {
	switch level {
	case logrus.DebugLevel, logrus.TraceLevel:
		return logger.DebugLevel
	case logrus.InfoLevel:
		return logger.InfoLevel
	case logrus.WarnLevel:
		return logger.WarnLevel
	default:
		return logger.ErrorLevel
	}
}

func logAt(log logger.Logger, level logrus.Level, msg string) {
	switch daprLevel(level) {
	case logger.DebugLevel:
		log.Debug(msg)
	case logger.InfoLevel:
		log.Info(msg)
	case logger.WarnLevel:
		log.Warn(msg)
	default:
		log.Error(msg)
	}
}

// KCL's polling consumer logs lease renewals through logrus' global logger, not the configured one,
// and that logger writes to stderr in its own format. A hook on it forwards the entries that come
// from KCL to the Dapr logger of the consumer they name, and a formatter wrapper drops them from the
// global output; entries from other code are left alone. Installed once per process.
var globalKCLLog struct {
	once    sync.Once
	mu      sync.RWMutex
	loggers map[string]logger.Logger // worker ID → consumer logger
}

const kclPackagePrefix = "github.com/vmware/vmware-go-kcl-v2/"

// kclEntryKey marks, in entry.Data, an entry the hook forwarded.
const kclEntryKey = "__daprKinesisKCL"

// registerGlobalKCLLog sends the global-logger output of the KCL worker with this ID to log, until
// the returned function is called.
func registerGlobalKCLLog(workerID string, log logger.Logger) (unregister func()) {
	globalKCLLog.once.Do(func() {
		std := logrus.StandardLogger()
		std.AddHook(kclHook{})
		std.SetFormatter(kclDropFormatter{next: std.Formatter})
	})
	globalKCLLog.mu.Lock()
	if globalKCLLog.loggers == nil {
		globalKCLLog.loggers = map[string]logger.Logger{}
	}
	globalKCLLog.loggers[workerID] = log
	globalKCLLog.mu.Unlock()
	return func() {
		globalKCLLog.mu.Lock()
		delete(globalKCLLog.loggers, workerID)
		globalKCLLog.mu.Unlock()
	}
}

type kclHook struct{}

func (kclHook) Levels() []logrus.Level { return logrus.AllLevels }

func (kclHook) Fire(e *logrus.Entry) error {
	if !calledFromKCL() {
		return nil
	}
	e.Data[kclEntryKey] = true
	globalKCLLog.mu.RLock()
	defer globalKCLLog.mu.RUnlock()
	// KCL's renewal messages name the worker ("... for worker: <id>"); with one consumer, it is that.
	var target logger.Logger
	for id, l := range globalKCLLog.loggers {
		if target == nil || strings.Contains(e.Message, id) {
			target = l
		}
	}
	if target == nil {
		return nil
	}
	if level := kclLevel(e.Level, e.Message, e.Message); target.IsOutputLevelEnabled(daprLevel(level)) {
		logAt(target, level, "KCL: "+e.Message)
	}
	return nil
}

// calledFromKCL reports whether the logging call came from KCL's packages.
func calledFromKCL() bool {
	var pcs [24]uintptr
	n := runtime.Callers(3, pcs[:])
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, kclPackagePrefix) {
			return true
		}
		if !strings.HasPrefix(f.Function, "github.com/sirupsen/logrus") && !strings.HasSuffix(f.Function, "kclHook.Fire") {
			// The first frame outside logrus is the caller.
			return false
		}
		if !more {
			return false
		}
	}
}

// kclDropFormatter formats nothing for entries the hook forwarded.
type kclDropFormatter struct {
	next logrus.Formatter
}

func (f kclDropFormatter) Format(e *logrus.Entry) ([]byte, error) {
	if _, ok := e.Data[kclEntryKey]; ok {
		return nil, nil
	}
	return f.next.Format(e)
}
