package kinesis

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// An event stream frame (application/vnd.amazon.eventstream) is a 12-byte prelude (total length,
// headers length, prelude CRC), the headers, the payload and a 4-byte CRC. The SDK's decoder checks
// the CRCs; this file only reads enough to tell what a frame is.
const (
	framePreludeLen = 12
	frameCRCLen     = 4
	// The format's own limits (smithy-go eventstream): larger values mean the bytes are not frames.
	maxFrameHeadersLen = 128 << 10
	maxFramePayloadLen = 16 << 20
)

var errNotEventStream = errors.New("malformed event stream frame")

// readFrame reads one whole frame from r into buf (grown as needed) and returns it. At a clean end
// between frames it returns io.EOF; a stream that breaks inside a frame gives io.ErrUnexpectedEOF
// or the read error.
func readFrame(r io.Reader, buf []byte) ([]byte, error) {
	var prelude [framePreludeLen]byte
	if _, err := io.ReadFull(r, prelude[:]); err != nil {
		return nil, err
	}
	total := binary.BigEndian.Uint32(prelude[0:4])
	headers := binary.BigEndian.Uint32(prelude[4:8])
	if headers > maxFrameHeadersLen || uint64(total) < uint64(framePreludeLen)+uint64(headers)+frameCRCLen ||
		uint64(total) > uint64(framePreludeLen)+maxFrameHeadersLen+maxFramePayloadLen+frameCRCLen {
		return nil, fmt.Errorf("%w: length %d, headers %d", errNotEventStream, total, headers)
	}
	if cap(buf) < int(total) {
		buf = make([]byte, total)
	}
	buf = buf[:total]
	copy(buf, prelude[:])
	if _, err := io.ReadFull(r, buf[framePreludeLen:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// streamFrame is what matters of one frame here.
type streamFrame struct {
	messageType   string // event, exception or error
	eventType     string // SubscribeToShardEvent, initial-response, ...
	exceptionType string // ResourceInUseException, ...
	errorCode     string
	errorMessage  string
	payload       []byte
}

// parseFrame reads the headers of a frame returned by readFrame; headers it cannot read are ignored.
func parseFrame(frame []byte) streamFrame {
	headersEnd := framePreludeLen + int(binary.BigEndian.Uint32(frame[4:8]))
	f := streamFrame{payload: frame[headersEnd : len(frame)-frameCRCLen]}
	for b := frame[framePreludeLen:headersEnd]; len(b) > 0; {
		nameLen := int(b[0])
		if len(b) < 1+nameLen+1 {
			return f
		}
		name := string(b[1 : 1+nameLen])
		typ := b[1+nameLen]
		b = b[2+nameLen:]
		var size int
		switch typ {
		case 0, 1: // bool true, bool false
		case 2: // byte
			size = 1
		case 3: // int16
			size = 2
		case 4: // int32
			size = 4
		case 5, 8: // int64, timestamp
			size = 8
		case 9: // uuid
			size = 16
		case 6, 7: // bytes, string: a 2-byte length first
			if len(b) < 2 {
				return f
			}
			size = 2 + int(binary.BigEndian.Uint16(b))
		default:
			return f
		}
		if len(b) < size {
			return f
		}
		if typ == 7 {
			value := string(b[2:size])
			switch name {
			case ":message-type":
				f.messageType = value
			case ":event-type":
				f.eventType = value
			case ":exception-type":
				f.exceptionType = value
			case ":error-code":
				f.errorCode = value
			case ":error-message":
				f.errorMessage = value
			}
		}
		b = b[size:]
	}
	return f
}

// failure returns the error an exception or error frame carries, or nil for an event.
func (f *streamFrame) failure() error {
	switch f.messageType {
	case "exception":
		var body struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(f.payload, &body) != nil || body.Message == "" {
			return errors.New(f.exceptionType)
		}
		return fmt.Errorf("%s: %s", f.exceptionType, body.Message)
	case "error":
		return fmt.Errorf("%s: %s", f.errorCode, f.errorMessage)
	}
	return nil
}
