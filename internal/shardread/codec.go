package shardread

import (
	"io"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/schemas"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/aws/smithy-go/transport/http/protocol/awsjson"
)

// PerStreamCodec is a kinesis.Options function that gives every event stream a protocol codec of its
// own: smithy-go (v1.28) shares one per client without synchronization (aws/smithy-go#714), a data
// race once two subscriptions are open.
func PerStreamCodec(o *kinesis.Options) {
	o.Protocol = eventStreamProtocol{ClientProtocol: o.Protocol}
}

// eventStreamProtocol is the Kinesis protocol with a codec of its own for each event stream call.
// The shared codec's state is never read back, so the race is harmless today, but the race detector
// fails every test with two subscriptions open. A fresh codec costs a few small allocations per event.
type eventStreamProtocol struct {
	smithyhttp.ClientProtocol
}

func (eventStreamProtocol) DeserializeEventMessage(schema *smithy.Schema, types *smithy.TypeRegistry, r io.Reader) (smithy.Deserializable, error) {
	return awsjson.New11(schemas.Kinesis_20131202).DeserializeEventMessage(schema, types, r)
}

func (eventStreamProtocol) DeserializeInitialResponse(schema *smithy.Schema, r io.Reader, out smithy.Deserializable) error {
	return awsjson.New11(schemas.Kinesis_20131202).DeserializeInitialResponse(schema, r, out)
}
