/**
 * The minoots.v1 services, loaded at run time from the package's copies of the repository's
 * .proto files (proto/, written by scripts/sync-proto.mjs; never edited by hand). The
 * message types in ./gen are generated from the same files at build time.
 */
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType as TimersProto } from "./gen/timers";
import type { ProtoGrpcType as ClusterProto } from "./gen/cluster";
import type { ProtoGrpcType as SubscriptionsProto } from "./gen/subscriptions";
import type { ProtoGrpcType as DeliveryProto } from "./gen/delivery";

/** The options the types in ./gen were generated with (package.json "gen-types"): keep them equal. */
export const LOADER_OPTIONS: protoLoader.Options = {
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export const PROTO_DIR = path.join(__dirname, "..", "..", "proto");

type Protos = TimersProto & ClusterProto & SubscriptionsProto & DeliveryProto;
type Minoots = Protos["minoots"]["v1"];

let loaded: Minoots | undefined;

/** The minoots.v1 package: service client constructors (Timers, Cluster, Subscriptions, EndpointService). */
export function minootsV1(): Minoots {
  if (loaded === undefined) {
    const def = protoLoader.loadSync(
      ["minoots/v1/timers.proto", "minoots/v1/cluster.proto", "minoots/v1/subscriptions.proto",
        "minoots/v1/delivery.proto"],
      { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] },
    );
    const root = grpc.loadPackageDefinition(def) as unknown as Protos;
    loaded = root.minoots.v1;
  }
  return loaded;
}
