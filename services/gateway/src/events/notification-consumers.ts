// The gateway's durable consumers: wallet events that become notifications. Each is its own
// durable consumer, shared by the gateway replicas (one of them applies each event) and
// effectively-once through the inbox; the store's trigger then tells every replica.
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import type { EntityManager } from "@ovation/db";
import type { ConsumerSpec, ReceivedEvent } from "@ovation/events";
import {
  BoostPurchasedSchema,
  TransferCommittedSchema,
} from "@ovation/proto/gen/ovation/wallet/v1/events_pb.ts";
import { boostNotifications, creditNotifications, type Notification } from "../domain/notifications.ts";
import type { NotificationStore } from "../store/notification-store.ts";

export const notificationSubjects = {
  boostPurchased: "wallet.boost.purchased",
  /**
   * Transfers that are credit events (purchased, spent, earned); the mapping decides which
   * deserve a notification.
   */
  credits: "wallet.transfer.credit.>",
} as const;

type Overrides<Desc extends DescMessage> = Partial<Pick<ConsumerSpec<Desc>, "retryBackoffMs" | "ackWaitMs">>;

const handler =
  <T>(store: NotificationStore, notify: (event: T, receivedAt: Date) => Notification[]) =>
  (em: EntityManager, events: ReceivedEvent<T>[]) =>
    store.insert(
      em,
      events.flatMap((event) => notify(event.message, event.publishedAt)),
    );

export function boostNotificationConsumer(
  store: NotificationStore,
  overrides: Overrides<typeof BoostPurchasedSchema> = {},
) {
  return {
    name: "gateway-boost-notifications",
    stream: "WALLET",
    subject: notificationSubjects.boostPurchased,
    schema: BoostPurchasedSchema,
    handle: handler<MessageShape<typeof BoostPurchasedSchema>>(store, boostNotifications),
    ...overrides,
  } satisfies ConsumerSpec<typeof BoostPurchasedSchema>;
}

export function creditNotificationConsumer(
  store: NotificationStore,
  overrides: Overrides<typeof TransferCommittedSchema> = {},
) {
  return {
    name: "gateway-credit-notifications",
    stream: "WALLET",
    subject: notificationSubjects.credits,
    schema: TransferCommittedSchema,
    handle: handler<MessageShape<typeof TransferCommittedSchema>>(store, ({ credit }, receivedAt) =>
      credit === undefined ? [] : creditNotifications(credit, receivedAt),
    ),
    ...overrides,
  } satisfies ConsumerSpec<typeof TransferCommittedSchema>;
}
